"""TensorBoard event files of a run directory (`fastmbrl train --tensorboard`), in DIR/tensorboard/.

Each committed iteration's numeric metrics are scalars against env_steps. The events of an
iteration are written after it commits, so the files never hold a point that the run directory
does not: a kill can only keep the last points from reaching the file (the writer is
asynchronous). A resume reads back the last step the files hold and writes the committed
iterations after it again, so the files end up with each committed iteration once; its event
file also starts with TensorBoard's purge marker for the steps after that (`purge_step`), which
hides from TensorBoard any point a file of another origin holds past the last commit.

The writer is tensorboardX's (the `tensorboard` extra), imported only when a run asks for it.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

from fastmbrl.errors import FormatError, require

DIRECTORY = "tensorboard"
#: rows' fields that are the axis or a counter, not a curve
_NOT_PLOTTED = ("iteration", "env_steps")


def require_writer():
    """tensorboardX, or MissingExtraError saying how to install it."""
    return require("tensorboardX", "tensorboard", "writing TensorBoard event files (--tensorboard)")


class EventLog:
    """The event files of the run in `out`, continued after its committed `rows`."""

    def __init__(self, out, rows):
        tbx = require_writer()
        from tensorboardX.proto.event_pb2 import Event

        self.directory = Path(out) / DIRECTORY
        steps = [_env_steps(out, r) for r in rows]
        logged = last_logged_step(self.directory, Event)
        if not steps and logged is None:
            start = None  # a new log: nothing to write again, nothing to purge
        else:  # the first step to write again, and to purge from
            start = 0 if logged is None else min(logged, steps[-1] if steps else -1) + 1
        # tensorboardX names a file by the second and the host, and would overwrite a file of
        # the same second: a sequence number keeps each file, in the order TensorBoard reads
        files = len(list(self.directory.glob("events.out.tfevents.*")))
        # a short flush interval: the file follows the run within a few seconds
        self._writer = tbx.SummaryWriter(str(self.directory), purge_step=start, flush_secs=5,
                                         filename_suffix=f".{files + 1:06d}")
        for row, step in zip(rows, steps):
            if start is not None and step >= start:
                self.add(row, flush=False)
        self._writer.flush()

    def add(self, row: dict, flush: bool = True) -> None:
        """Write the numeric fields of committed `row` at its env_steps."""
        step = row["env_steps"]
        for key, value in row.items():
            if key in _NOT_PLOTTED or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, global_step=step)
        if flush:
            self._writer.flush()

    def close(self) -> None:
        self._writer.close()  # waits for the queued events


def _env_steps(out, row) -> int:
    step = row.get("env_steps")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise FormatError(f"{out}/metrics.jsonl: iteration {row.get('iteration')!r} has no "
                          f"env_steps count (got {step!r})")
    return step


def last_logged_step(directory: Path, Event) -> int | None:
    """The largest step of a scalar in the event files of `directory` that TensorBoard shows
    (a purge marker hides the steps from its own on, in the files before it); None if none.
    Reading stops at a file's torn or unreadable end."""
    from google.protobuf.message import DecodeError

    last = None
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):  # a record: length, its CRC, the event, the event's CRC
            (size,) = struct.unpack_from("<Q", data, pos)
            end = pos + 12 + size + 4
            if end > len(data):
                break
            try:
                event = Event.FromString(data[pos + 12:pos + 12 + size])
            except DecodeError:
                break
            if event.HasField("session_log") and event.session_log.status == \
                    event.session_log.START and last is not None and last >= event.step:
                last = event.step - 1 if event.step > 0 else None
            elif event.HasField("summary") and len(event.summary.value) and \
                    (last is None or event.step > last):
                last = event.step
            pos = end
    return last
