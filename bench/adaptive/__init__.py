"""The adaptive-polling benchmark: a discrete-event simulation on virtual time of the engine's
polling policy against the simulator's ingestion curves (:mod:`.simulation`), and its results
as text (:mod:`.report`)."""

from .simulation import SMOKE, Result, Settings, run

__all__ = ["SMOKE", "Result", "Settings", "run"]
