"""Definitions shared by the domain modules, so that each is written once.

- :class:`Frozen`, the base of Lamia's value objects (models, engine): immutable, and refusing
  fields it does not know, so a misspelt field is an error rather than ignored.
- :data:`Obj`, a Kubernetes or Istio object as the API's JSON (Istio rendering, the Kubernetes
  adapter): a plain dict, so that fields Lamia does not know travel through untouched.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict

Obj: TypeAlias = dict[str, Any]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
