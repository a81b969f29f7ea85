"""Black-box optimisers over real vectors (CMA-ES); they know nothing of models or tasks."""
from .cmaes import CMAES, CMAResult

__all__ = ["CMAES", "CMAResult"]
