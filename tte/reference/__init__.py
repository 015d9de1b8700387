"""The numpy reference interpreter: the living specification the generated C is tested against."""

from tte.reference.interpreter import run

__all__ = ["run"]
