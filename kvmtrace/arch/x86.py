"""x86 KVM exit reasons: VMX basic exit reasons (Intel SDM appendix C) and SVM exit codes (AMD APM).

``kvm_exit`` on x86 carries ``exit_reason`` and ``isa`` (1 = VMX, 2 = SVM). For VMX the low 16
bits are the basic reason and bit 31 flags a failed VM entry. Names follow the kernel's
``VMX_EXIT_REASONS`` / ``SVM_EXIT_REASONS`` tables (the ``kvm_exit`` print format); unknown
codes print as ``VMX_<n>`` / ``SVM_0x<hex>``.
"""

from __future__ import annotations

import polars as pl

from kvmtrace.arch import name_lookup

ISA_VMX, ISA_SVM = 1, 2

VMX_REASONS: dict[int, str] = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL", 4: "SIPI_SIGNAL",
    7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID", 12: "HLT", 13: "INVD",
    14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL", 19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD",
    22: "VMPTRST", 23: "VMREAD", 24: "VMRESUME", 25: "VMWRITE", 26: "VMOFF", 27: "VMON", 28: "CR_ACCESS",
    29: "DR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE",
    34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG", 39: "MONITOR_INSTRUCTION",
    40: "PAUSE_INSTRUCTION", 41: "MCE_DURING_VMENTRY", 43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS",
    45: "EOI_INDUCED", 46: "GDTR_IDTR", 47: "LDTR_TR", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG",
    50: "INVEPT", 51: "RDTSCP", 52: "PREEMPTION_TIMER", 53: "INVVPID", 54: "WBINVD", 55: "XSETBV",
    56: "APIC_WRITE", 57: "RDRAND", 58: "INVPCID", 59: "VMFUNC", 60: "ENCLS", 61: "RDSEED",
    62: "PML_FULL", 63: "XSAVES", 64: "XRSTORS", 67: "UMWAIT", 68: "TPAUSE", 74: "BUS_LOCK",
    75: "NOTIFY", 77: "TDCALL", 84: "MSR_READ_IMM", 85: "MSR_WRITE_IMM",
}

_SVM_EXCP = {0: "DE", 1: "DB", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF", 10: "TS", 11: "NP",
             12: "SS", 13: "GP", 14: "PF", 16: "MF", 17: "AC", 18: "MC", 19: "XF"}
SVM_REASONS: dict[int, str] = {
    **{n: f"read_cr{n}" for n in (0, 2, 3, 4, 8)},
    **{0x10 + n: f"write_cr{n}" for n in (0, 2, 3, 4, 8)},
    **{0x20 + n: f"read_dr{n}" for n in range(8)},
    **{0x30 + n: f"write_dr{n}" for n in range(8)},
    **{0x40 + v: f"{name}_excp" for v, name in _SVM_EXCP.items()},
    0x60: "interrupt", 0x61: "nmi", 0x62: "smi", 0x63: "init", 0x64: "vintr", 0x65: "cr0_sel_write",
    0x66: "read_idtr", 0x67: "read_gdtr", 0x68: "read_ldtr", 0x69: "read_tr", 0x6A: "write_idtr",
    0x6B: "write_gdtr", 0x6C: "write_ldtr", 0x6D: "write_tr", 0x6E: "rdtsc", 0x6F: "rdpmc", 0x70: "pushf",
    0x71: "popf", 0x72: "cpuid", 0x73: "rsm", 0x74: "iret", 0x75: "swint", 0x76: "invd", 0x77: "pause",
    0x78: "hlt", 0x79: "invlpg", 0x7A: "invlpga", 0x7B: "io", 0x7C: "msr", 0x7D: "task_switch",
    0x7E: "ferr_freeze", 0x7F: "shutdown", 0x80: "vmrun", 0x81: "hypercall", 0x82: "vmload",
    0x83: "vmsave", 0x84: "stgi", 0x85: "clgi", 0x86: "skinit", 0x87: "rdtscp", 0x88: "icebp",
    0x89: "wbinvd", 0x8A: "monitor", 0x8B: "mwait", 0x8D: "xsetbv", 0x8F: "write_efer_trap",
    0x90: "write_cr0_trap", 0x94: "write_cr4_trap", 0x98: "write_cr8_trap", 0xA2: "invpcid",
    0xA5: "buslock", 0xA6: "idle-halt", 0x400: "npf", 0x401: "avic_incomplete_ipi",
    0x402: "avic_unaccelerated_access", 0x403: "vmgexit", 0xFFFFFFFF: "invalid_guest_state",
}


def vmx_reason(exit_reason: pl.Expr) -> pl.Expr:
    """VMX basic exit reason name (low 16 bits), ``VMX_<n>`` when unnamed."""
    return name_lookup(exit_reason.cast(pl.Int64) & 0xFFFF, VMX_REASONS, "VMX_")


def svm_reason(exit_reason: pl.Expr) -> pl.Expr:
    """SVM exit code name, ``SVM_<n>`` when unnamed."""
    return name_lookup(exit_reason.cast(pl.Int64) & 0xFFFFFFFF, SVM_REASONS, "SVM_")


def exit_class(exit_reason: pl.Expr, isa: pl.Expr | None) -> pl.Expr:
    """The exit class of an x86 ``kvm_exit``: VMX name when ``isa`` is 1 (or missing), SVM name when 2."""
    if isa is None:
        return vmx_reason(exit_reason)
    return pl.when(isa == ISA_SVM).then(svm_reason(exit_reason)).otherwise(vmx_reason(exit_reason))
