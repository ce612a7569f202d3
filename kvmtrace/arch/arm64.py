"""arm64 decoding, the one place for it: ESR_EL2 exception classes, abort syndromes, ``kvm_exit.ret``.

Sources: the primer (sections 3 and 4) and the Arm ARM. The kernel's own EC name table (the
``kvm_exit`` print format) lacks several classes, so names come from the full table here and
unknown classes print as ``EC_0x..``.

ESR layout: EC = bits [31:26]; IL = bit 25; ISS = bits [24:0]. For aborts (EC 0x20/0x21/0x24/0x25):
DFSC/IFSC = bits [5:0] (0x04-0x07 translation level 0-3, 0x09-0x0B access flag level 1-3,
0x08 access flag level 0, 0x0C-0x0F permission level 0-3); WnR = bit 6; S1PTW = bit 7;
ISV = bit 24.
"""

from __future__ import annotations

import polars as pl

EC_NAMES: dict[int, str] = {
    0x00: "UNKNOWN", 0x01: "WFx", 0x03: "CP15_32", 0x04: "CP15_64", 0x05: "CP14_MR", 0x06: "CP14_LS",
    0x07: "FP_ASIMD", 0x08: "CP10_ID", 0x09: "PAC", 0x0C: "CP14_64", 0x0D: "BTI", 0x0E: "ILL",
    0x11: "SVC32", 0x12: "HVC32", 0x13: "SMC32", 0x15: "SVC64", 0x16: "HVC64", 0x17: "SMC64",
    0x18: "SYS64", 0x19: "SVE", 0x1A: "ERET", 0x1C: "FPAC", 0x1D: "SME", 0x1F: "IMP_DEF",
    0x20: "IABT_LOW", 0x21: "IABT_CUR", 0x22: "PC_ALIGN", 0x24: "DABT_LOW", 0x25: "DABT_CUR",
    0x26: "SP_ALIGN", 0x27: "MOPS", 0x28: "FP_EXC32", 0x2C: "FP_EXC64", 0x2D: "GCS", 0x2F: "SERROR",
    0x30: "BREAKPT_LOW", 0x31: "BREAKPT_CUR", 0x32: "SOFTSTP_LOW", 0x33: "SOFTSTP_CUR",
    0x34: "WATCHPT_LOW", 0x35: "WATCHPT_CUR", 0x38: "BKPT32", 0x3A: "VECTOR32", 0x3C: "BRK64",
}
# Every 6-bit class has a name: the table above, or EC_0x.. for reserved / unnamed ones.
EC_ALL: dict[int, str] = {ec: EC_NAMES.get(ec, f"EC_0x{ec:02x}") for ec in range(64)}
EC_IABT_LOW, EC_IABT_CUR, EC_DABT_LOW, EC_DABT_CUR = 0x20, 0x21, 0x24, 0x25
ABORT_ECS = (EC_IABT_LOW, EC_IABT_CUR, EC_DABT_LOW, EC_DABT_CUR)

RET_IRQ, RET_SERROR, RET_TRAP, RET_IL, RET_HYP_GONE = 0, 1, 2, 3, 0xBADCA11
RET_NAMES: dict[int, str] = {RET_IRQ: "IRQ", RET_SERROR: "SERROR", RET_TRAP: "TRAP", RET_IL: "IL",
                             RET_HYP_GONE: "HYP_GONE"}
SERROR_PENDING_BIT = 31  # ARM_EXIT_WITH_SERROR_BIT: set in ret when an SError was pending too

KINDS = ("translation", "access_flag", "permission", "other")


def ec_name(ec: pl.Expr) -> pl.Expr:
    """The exception class name of a 6-bit EC (``WFx``, ``DABT_LOW``, ... or ``EC_0x..``)."""
    keys = pl.Series(list(EC_ALL), dtype=pl.Int64)
    vals = pl.Series(list(EC_ALL.values()), dtype=pl.String)
    return (ec.cast(pl.Int64) & 0x3F).replace_strict(keys, vals, default=None, return_dtype=pl.String)


def esr_ec(esr: pl.Expr) -> pl.Expr:
    """EC, ESR bits [31:26], as Int32."""
    return ((esr.cast(pl.UInt64) // (1 << 26)) & 0x3F).cast(pl.Int32)


def _bit(esr: pl.Expr, n: int) -> pl.Expr:
    return ((esr.cast(pl.UInt64) // (1 << n)) & 1) == 1


def fsc(esr: pl.Expr) -> pl.Expr:
    """DFSC / IFSC, ESR bits [5:0], as Int32."""
    return (esr.cast(pl.UInt64) & 0x3F).cast(pl.Int32)


def fault_kind(esr: pl.Expr) -> pl.Expr:
    """``translation``, ``access_flag``, ``permission`` or ``other`` from the fault status code."""
    code = fsc(esr)
    return (pl.when(code.is_between(0x04, 0x07)).then(pl.lit("translation"))
            .when(code.is_between(0x08, 0x0B)).then(pl.lit("access_flag"))
            .when(code.is_between(0x0C, 0x0F)).then(pl.lit("permission"))
            .otherwise(pl.lit("other")))


def fault_level(esr: pl.Expr) -> pl.Expr:
    """Translation table level (0-3) of translation / access flag / permission faults, else null."""
    code = fsc(esr)
    return pl.when(code.is_between(0x04, 0x0F)).then((code & 0x3).cast(pl.Int8)).otherwise(None)


def is_write(esr: pl.Expr) -> pl.Expr:
    """WnR (bit 6); always false for instruction aborts, whose bit 6 is RES0."""
    ec = esr_ec(esr)
    return _bit(esr, 6) & ~ec.is_in([EC_IABT_LOW, EC_IABT_CUR])


def s1ptw(esr: pl.Expr) -> pl.Expr:
    """S1PTW (bit 7): the abort happened during the guest's own stage-1 table walk."""
    return _bit(esr, 7)


def isv(esr: pl.Expr) -> pl.Expr:
    """ISV (bit 24): the syndrome is valid (typical of MMIO-style single loads/stores)."""
    return _bit(esr, 24)


def decode_esr(esr: pl.Expr) -> list[pl.Expr]:
    """The decoded abort columns of the faults table: ec, kind, level, write, s1ptw, isv."""
    return [esr_ec(esr).alias("ec"), fault_kind(esr).alias("kind"), fault_level(esr).alias("level"),
            is_write(esr).alias("write"), s1ptw(esr).alias("s1ptw"), isv(esr).alias("isv")]


def ret_code(ret: pl.Expr) -> pl.Expr:
    """The exception code of ``kvm_exit.ret`` without the SError-pending bit."""
    return (ret.cast(pl.Int64) & 0x7FFFFFFF).cast(pl.Int32)


def exit_class(ret: pl.Expr, ec: pl.Expr) -> pl.Expr:
    """``IRQ``, ``SERROR``, ``IL``, ``HYP_GONE``, the EC name for TRAP, or ``RET_<n>`` for other codes."""
    code = ret_code(ret)
    named = pl.Series(list(RET_NAMES), dtype=pl.Int64)
    other = pl.lit("RET_") + code.cast(pl.String)
    by_ret = code.cast(pl.Int64).replace_strict(named, pl.Series(list(RET_NAMES.values())), default=None,
                                                return_dtype=pl.String)
    return pl.when(code == RET_TRAP).then(ec_name(ec)).otherwise(by_ret.fill_null(other))
