"""Errors that name the parameter at fault, so that each caller names it in its own words: a notebook
reads `beam_size must be between 1 and 128`, the command line `--beam-size must be ...`."""

from __future__ import annotations

from typing import Callable


def named(param: str) -> str:
    """The placeholder for a parameter's name in an error message: f"{named('beam_size')} must be ..."."""
    return "{" + param + "}"


class ParamError(ValueError):
    """A bad value the caller gave. `message` holds a {param} placeholder for each of `params`;
    str() names them as the library's parameters, worded() as the caller calls them."""

    def __init__(self, message: str, *params: str) -> None:
        self.template, self.params = message, params
        super().__init__(self.worded())

    def worded(self, name: Callable[[str], str] = str) -> str:
        """The message with each parameter written as name(parameter)."""
        text = self.template
        for p in self.params:
            text = text.replace(named(p), name(p))
        return text

    @classmethod
    def wrap(cls, e: BaseException) -> "ParamError":
        """`e` as this class, keeping its parameters (a lower layer's error passed up)."""
        return cls(getattr(e, "template", str(e)), *getattr(e, "params", ()))
