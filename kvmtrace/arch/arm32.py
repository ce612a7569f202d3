"""32-bit ARM KVM (the study's Linux 3.8/3.9 era): infer the exit class from what happened next.

Its ``kvm_exit`` carries only ``vcpu_pc``: no exception code, no class. The class is inferred
from the first classifying event of the same thread inside the handling interval
(``kvm_exit`` -> next ``kvm_entry``):

===========================================  ============================================
event in the handling interval               class
===========================================  ============================================
``kvm_guest_fault``                          EC of its ``hsr`` (``DABT_LOW`` / ``IABT_LOW``)
``kvm_mmio``, ``kvm_mmio_emulate``           ``DABT_LOW``
``kvm_userspace_exit`` reason MMIO (6)       ``DABT_LOW``
``kvm_wfi``, ``kvm_wfx``, ``kvm_wfx_arm64``  ``WFx``
``kvm_hvc``                                  ``HVC32``
``kvm_emulate_cp15_imp``                     ``CP15_32``
none of these                                ``OTHER`` (an IRQ exit, or a trap with no tracepoint)
===========================================  ============================================

Rows classified this way carry ``class_inferred = true``.
"""

from __future__ import annotations

import polars as pl

from kvmtrace.arch.arm64 import ec_name, esr_ec

KVM_EXIT_MMIO = 6
FIXED_CLASS: dict[str, str] = {
    "kvm_mmio": "DABT_LOW", "kvm_mmio_emulate": "DABT_LOW",
    "kvm_wfi": "WFx", "kvm_wfx": "WFx", "kvm_wfx_arm64": "WFx",
    "kvm_hvc": "HVC32", "kvm_emulate_cp15_imp": "CP15_32",
}
CLASSIFYING_EVENTS = ("kvm_guest_fault", "kvm_userspace_exit", *FIXED_CLASS)
NO_EVIDENCE = "OTHER"


def inferred_class(inner: pl.DataFrame) -> pl.DataFrame:
    """exit_idx -> exit_class from the events inside each handling interval.

    ``inner`` has one row per event in a handling interval: ``exit_idx``, ``idx``, ``event``
    (String), ``hsr`` (for kvm_guest_fault, else null) and ``reason`` (kvm_userspace_exit, else null).
    Exits without any classifying event are absent from the result (the caller fills ``OTHER``).
    """
    fixed = pl.col("event").replace_strict(FIXED_CLASS, default=None, return_dtype=pl.String)
    cls = (pl.when(pl.col("event") == "kvm_guest_fault").then(ec_name(esr_ec(pl.col("hsr"))))
           .when((pl.col("event") == "kvm_userspace_exit") & (pl.col("reason") == KVM_EXIT_MMIO))
           .then(pl.lit("DABT_LOW"))
           .otherwise(fixed))
    return (inner.with_columns(cls.alias("exit_class"))
            .filter(pl.col("exit_class").is_not_null())
            .sort("idx")
            .group_by("exit_idx", maintain_order=True)
            .agg(pl.col("exit_class").first()))
