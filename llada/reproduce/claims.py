"""The claims by name, in the order `llada reproduce all` runs them. A new claim is a module that
declares a `Claim` (see `llada.reproduce.base`) and one line here."""

from __future__ import annotations

from llada.reproduce import any_order, bound, conversion, planning, remasking, reversal, semi_ar
from llada.reproduce.base import Claim

CLAIMS: dict[str, Claim] = {c.name: c for c in (
    reversal.CLAIM,
    remasking.CLAIM,
    semi_ar.CLAIM,
    bound.CLAIM,
    any_order.CLAIM,
    planning.CLAIM,
    conversion.CLAIM,
)}
