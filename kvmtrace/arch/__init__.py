"""Architecture decoding: exit reasons and fault syndromes, one module per architecture.

``arm64`` decodes ESR_EL2 (exception class, DFSC/IFSC, WnR, S1PTW, ISV) and ``kvm_exit.ret``;
``arm32`` infers the class of 32-bit ARM exits, whose ``kvm_exit`` carries only a PC;
``x86`` names VMX and SVM exit reasons. Every decoder is a vectorised polars expression;
``detect`` says which of them (and which machine) wrote a capture.
"""

from __future__ import annotations

import polars as pl


def name_lookup(code: pl.Expr, names: dict[int, str], unknown_prefix: str) -> pl.Expr:
    """``names[code]``, or ``<unknown_prefix><code in decimal>`` for codes without a name; null stays null."""
    keys = pl.Series(list(names), dtype=pl.Int64)
    vals = pl.Series(list(names.values()), dtype=pl.String)
    as_int = code.cast(pl.Int64)
    fallback = pl.lit(unknown_prefix) + as_int.cast(pl.String)
    return as_int.replace_strict(keys, vals, default=None, return_dtype=pl.String).fill_null(fallback)
