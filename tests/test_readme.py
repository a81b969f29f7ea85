"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["plan"].shape == (25, 1)
    assert namespace["action"].shape == (1,)
    assert (tmp_path / "my_controller" / "model.npz").exists()
