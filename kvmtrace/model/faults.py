"""Stage-2 fault attribution: one row per fault (``kvm_guest_fault``, and ``kvm_access_fault`` where it
is not the second record of the same access-flag fault), and its summary.

Columns follow docs/stages.md ("Stage-2 faults"); ``EXTRA_SCHEMA`` adds a few. The decoding of
the ESR lives in :mod:`kvmtrace.arch.arm64`. Per fault:

* ``handling_ns``: the enclosing exit's handling interval (the kvm_exit before the fault on the
  same thread -> that thread's next kvm_entry).
* ``mmio``: a ``kvm_mmio`` or a ``kvm_userspace_exit`` with reason MMIO / ARM_NISV in the same
  handling interval after the fault, or an IPA outside guest RAM.
* ``region``: ``ram`` or the device region, named from ``capture.json`` (``guest_memory``), from the
  QEMU ``virt`` memory map when the RAM sits where that machine puts it (0x40000000), else
  ``mmio@0x<first IPA of the cluster>``.

Guest RAM comes from ``capture.json`` when the recorder wrote ``guest_memory``; otherwise it is
inferred: the pages of faults without MMIO evidence, cut into clusters at gaps over 256 MiB
(memory-backed device pages such as QEMU's pvtime page form clusters of their own; a named
device region wins over ``ram``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from kvmtrace.arch import arm64
from kvmtrace.ingest.tables import EventTables, pid_column
from kvmtrace.model.exits import USERSPACE_REASONS, exit_intervals, inner_events
from kvmtrace.model.phases import phase_of
from kvmtrace.model.requires import requires_events

FAULT_SCHEMA: dict[str, pl.DataType] = {
    "t_ns": pl.Int64(), "vcpu_tid": pl.Int32(), "ipa": pl.UInt64(), "esr": pl.UInt64(), "ec": pl.Int32(),
    "kind": pl.String(), "level": pl.Int8(), "write": pl.Boolean(), "s1ptw": pl.Boolean(), "isv": pl.Boolean(),
    "mmio": pl.Boolean(), "region": pl.String(), "phase": pl.String(), "handling_ns": pl.Int64(),
}
EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "idx": pl.UInt32(),        # row of the fault event in the common table
    "event": pl.String(),      # kvm_guest_fault or kvm_access_fault
    "cpu": pl.Int32(),
    "ec_name": pl.String(),    # DABT_LOW, IABT_LOW, ...
    "mmio_gpa": pl.UInt64(),   # gpa of the kvm_mmio that followed (with the page offset), null if none
    "exit_t_ns": pl.Int64(),   # the enclosing kvm_exit
}
PAGE_SHIFT = 12
RAM_GAP = 256 << 20
PAGE = 1 << PAGE_SHIFT
MMIO_GAP = 64 << 10
MMIO_EXIT_REASONS = [k for k, v in USERSPACE_REASONS.items() if v in ("MMIO", "ARM_NISV")]

# hw/arm/virt.c base_memmap: (start, size, name). Used only when the RAM starts at VIRT_RAM_BASE.
VIRT_RAM_BASE = 0x40000000
QEMU_VIRT_MAP: list[tuple[int, int, str]] = [
    (0x00000000, 0x08000000, "flash"), (0x08000000, 0x01000000, "gic"), (0x09000000, 0x1000, "uart"),
    (0x09010000, 0x1000, "rtc"), (0x09020000, 0x18, "fw_cfg"), (0x09030000, 0x1000, "gpio"),
    (0x09040000, 0x1000, "secure-uart"), (0x09050000, 0x20000, "smmu"), (0x09070000, 0x10000, "acpi"),
    (0x090A0000, 0x10000, "pvtime"), (0x0A000000, 0x4000, "virtio"), (0x0C000000, 0x02000000, "platform-bus"),
    (0x10000000, 0x2EFF0000, "pcie-mmio"), (0x3EFF0000, 0x10000, "pcie-pio"), (0x3F000000, 0x01000000, "pcie-ecam"),
    (0x4000000000, 0x04000000, "gic"), (0x4010000000, 0x10000000, "pcie-ecam"),
    (0x8000000000, 0x8000000000, "pcie-mmio"),
]
REGION_SCHEMA = {"start": pl.UInt64(), "end": pl.UInt64(), "name": pl.String(), "source": pl.String()}


def raw_faults(t: EventTables) -> pl.DataFrame:
    """kvm_guest_fault and kvm_access_fault rows with the decoded ESR (access faults: kind access_flag)."""
    gf = t.table("kvm_guest_fault")
    esr = pl.col("hsr").cast(pl.UInt64)
    guest = gf.select("idx", pl.col("ts").alias("t_ns"), pl.col(pid_column(gf)).alias("vcpu_tid"), "cpu",
                      pl.col("ipa").cast(pl.UInt64), esr.alias("esr"), *arm64.decode_esr(esr),
                      pl.lit("kvm_guest_fault").alias("event"))
    af = t.table("kvm_access_fault")
    access = af.select("idx", pl.col("ts").alias("t_ns"), pl.col(pid_column(af)).alias("vcpu_tid"), "cpu",
                       pl.col("ipa").cast(pl.UInt64), pl.lit(None, pl.UInt64).alias("esr"),
                       pl.lit(None, pl.Int32).alias("ec"), pl.lit("access_flag").alias("kind"),
                       pl.lit(None, pl.Int8).alias("level"), pl.lit(None, pl.Boolean).alias("write"),
                       pl.lit(None, pl.Boolean).alias("s1ptw"), pl.lit(None, pl.Boolean).alias("isv"),
                       pl.lit("kvm_access_fault").alias("event"))
    # KVM logs an access-flag fault twice: kvm_guest_fault, then kvm_access_fault from its handler. One
    # fault, one row: an access fault right after a guest fault of the same vCPU and page is that fault.
    prev = guest.select("vcpu_tid", pl.col("idx").alias("g_idx"), (pl.col("ipa") // PAGE).alias("g_page"))
    access = (access.sort("idx").join_asof(prev, left_on="idx", right_on="g_idx", by="vcpu_tid", strategy="backward",
                                           check_sortedness=False)
              .join_asof(access.select("vcpu_tid", pl.col("idx").alias("a_prev")).sort("a_prev"), left_on="idx",
                         right_on="a_prev", by="vcpu_tid", strategy="backward", allow_exact_matches=False,
                         check_sortedness=False))
    no_access_between = pl.col("a_prev").is_null() | (pl.col("a_prev") < pl.col("g_idx"))
    same = (pl.col("g_page") == pl.col("ipa") // PAGE) & no_access_between
    paired = access.filter(same.fill_null(False))
    guest = guest.with_columns(pl.when(pl.col("idx").is_in(paired["g_idx"].implode())).then(pl.lit("access_flag"))
                               .otherwise(pl.col("kind")).alias("kind"))
    alone = access.filter(~same.fill_null(False)).drop("g_idx", "g_page", "a_prev")
    return (pl.concat([guest, alone.cast(guest.schema)])
            .with_columns(arm64.ec_name(pl.col("ec")).alias("ec_name")).sort("idx"))


def _attach_exits(t: EventTables, faults: pl.DataFrame, notes: list[str]) -> pl.DataFrame:
    """Adds exit_t_ns, handling_ns and the MMIO evidence of the enclosing handling interval."""
    have_exits = t.has("kvm_exit") and t.has("kvm_entry")
    if not have_exits:
        notes.append("no kvm_entry/kvm_exit: handling_ns is null and MMIO is inferred from the IPA only")
        return faults.with_columns(
            pl.lit(None, pl.Int64).alias("exit_t_ns"), pl.lit(None, pl.Int64).alias("handling_ns"),
            pl.lit(None, pl.Boolean).alias("mmio_evidence"), pl.lit(None, pl.UInt64).alias("mmio_gpa"))
    iv = exit_intervals(t)
    keys = iv.select(pl.col("idx").alias("k"), "vcpu_tid", pl.col("t_ns").alias("exit_t_ns"), "entry_idx",
                     "handling_ns").sort("k")
    f = (faults.with_columns(pl.col("idx").alias("k"))
         .join_asof(keys, on="k", by="vcpu_tid", strategy="backward", check_sortedness=False)
         .drop("k"))
    inside = pl.col("exit_t_ns").is_not_null() & (pl.col("entry_idx").is_null() | (pl.col("idx") < pl.col("entry_idx")))
    f = f.with_columns(*[pl.when(inside).then(pl.col(c)).alias(c) for c in ("exit_t_ns", "handling_ns", "entry_idx")])
    return f.join(_mmio_evidence(t, iv, faults, notes), on="idx", how="left").drop("entry_idx")


def _mmio_evidence(t: EventTables, iv: pl.DataFrame, faults: pl.DataFrame, notes: list[str]) -> pl.DataFrame:
    """Per fault idx: mmio_evidence (None when the capture cannot tell) and mmio_gpa."""
    has_mmio, has_usr = "kvm_mmio" in t.formats or t.has("kvm_mmio"), t.has("kvm_userspace_exit")
    if not (has_mmio or has_usr):
        notes.append("no kvm_mmio or kvm_userspace_exit in this capture: MMIO is inferred from the IPA only")
        return faults.select("idx", pl.lit(None, pl.Boolean).alias("mmio_evidence"),
                             pl.lit(None, pl.UInt64).alias("mmio_gpa"))
    inner = inner_events(t, iv, ("kvm_mmio", "kvm_userspace_exit", "kvm_guest_fault", "kvm_access_fault"))
    is_fault = pl.col("event").is_in(["kvm_guest_fault", "kvm_access_fault"])
    is_mmio = (pl.col("event") == "kvm_mmio") | ((pl.col("event") == "kvm_userspace_exit")
                                                 & pl.col("reason").is_in(MMIO_EXIT_REASONS))
    # Each fault owns the events after it up to the next fault of the same handling interval.
    owned = (inner.sort("idx")
             .with_columns(pl.when(is_fault).then(pl.col("idx")).forward_fill().over("exit_idx").alias("fault_idx"))
             .filter(pl.col("fault_idx").is_not_null()))
    return (owned.group_by("fault_idx")
            .agg(is_mmio.any().alias("mmio_evidence"),
                 pl.col("gpa").filter(pl.col("event") == "kvm_mmio").first().alias("mmio_gpa"))
            .rename({"fault_idx": "idx"}))


def manifest_regions(guest_memory: list[dict[str, object]]) -> pl.DataFrame:
    """Regions from capture.json ``guest_memory``: entries with name, start, size (ints or hex strings)."""
    rows = []
    for m in guest_memory:
        start, size = _int(m.get("start")), _int(m.get("size"))
        if start is None or size is None:
            continue
        name = str(m.get("name") or "ram")
        kind = str(m.get("kind") or "")
        is_ram = kind == "ram" or name.lower().startswith(("ram", "mem"))
        rows.append({"start": start, "end": start + size, "name": "ram" if is_ram else name, "source": "capture.json"})
    return pl.DataFrame(rows, schema=REGION_SCHEMA)


def _int(v: object) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            return None
    return None


def _clusters(ipas: pl.Series, gap: int) -> pl.DataFrame:
    """Contiguous clusters of sorted unique IPAs (a new cluster after a gap over ``gap``): start, last, n."""
    u = ipas.unique().sort().to_frame("ipa")
    return (u.with_columns((pl.col("ipa").diff().fill_null(0) > gap).cum_sum().alias("c"))
            .group_by("c").agg(pl.col("ipa").min().alias("start"), pl.col("ipa").max().alias("last"),
                                pl.len().alias("pages"))
            .sort("start"))


def inferred_ram(faults: pl.DataFrame) -> pl.DataFrame:
    """RAM regions from the faults: clusters of fault pages with no MMIO evidence (or, lacking any MMIO
    evidence, the cluster holding most faults), from the first to the end of the last page."""
    has_evidence = faults["mmio_evidence"].null_count() < faults.height
    if has_evidence:
        ipas = faults.filter(pl.col("mmio_evidence") == False)["ipa"]  # noqa: E712
        cl = _clusters(ipas // PAGE * PAGE, RAM_GAP)
    else:
        cl = _clusters(faults["ipa"] // PAGE * PAGE, RAM_GAP).sort(["pages", "start"], descending=[True, False]).head(1)
    return cl.select(
        pl.col("start").cast(pl.UInt64), (pl.col("last") + PAGE).cast(pl.UInt64).alias("end"),
        pl.lit("ram").alias("name"), pl.lit("inferred from faults").alias("source"))


def device_regions(mmio_ipas: pl.Series, ram: pl.DataFrame) -> pl.DataFrame:
    """Device regions for MMIO IPAs: the QEMU virt map when RAM starts at 0x40000000, else one
    ``mmio@0x...`` region per cluster of MMIO IPAs (gaps over 64 KiB)."""
    if is_qemu_virt(ram):
        return pl.DataFrame([{"start": s, "end": s + n, "name": name, "source": "QEMU virt memory map"}
                             for s, n, name in QEMU_VIRT_MAP], schema=REGION_SCHEMA)
    cl = _clusters(mmio_ipas, MMIO_GAP)
    # a handful of clusters: naming them in Python is not a loop over events
    rows = [{"start": s, "end": last + 1, "name": f"mmio@{s:#x}", "source": "inferred from MMIO faults"}
            for s, last in zip(cl["start"].to_list(), cl["last"].to_list(), strict=True)]
    return pl.DataFrame(rows, schema=REGION_SCHEMA)


def is_qemu_virt(ram: pl.DataFrame) -> bool:
    """True when a RAM region starts in the first 2 MiB above 0x40000000, where QEMU virt puts its RAM."""
    return bool(ram.height) and bool(ram["start"].is_between(VIRT_RAM_BASE, VIRT_RAM_BASE + (2 << 20) - 1).any())


def region_of(ipa: pl.DataFrame, regions: pl.DataFrame) -> pl.DataFrame:
    """``ipa`` frame (column ipa) with ``region`` from the first region containing it (null if none)."""
    r = regions.sort("start").select("start", "end", pl.col("name").alias("region"))
    j = ipa.sort("ipa").join_asof(r, left_on="ipa", right_on="start", strategy="backward")
    return j.select("ipa", pl.when(pl.col("ipa") < pl.col("end")).then(pl.col("region")).alias("region"))


@dataclass
class FaultTable:
    """The per-fault table, the memory layout used, and notes on what was inferred."""

    faults: pl.DataFrame
    regions: pl.DataFrame
    notes: list[str] = field(default_factory=list)


@requires_events("kvm:kvm_guest_fault", analysis="faults",
                 hint="record with -e kvm:kvm_guest_fault (arm64 / 32-bit ARM hosts)")
def fault_table(t: EventTables, phases: pl.DataFrame,
                guest_memory: list[dict[str, object]] | None = None) -> FaultTable:
    """One row per stage-2 fault: the docs/stages.md columns, then ``EXTRA_SCHEMA``."""
    notes: list[str] = []
    f = _attach_exits(t, raw_faults(t), notes)
    regions = manifest_regions(guest_memory or [])
    if not regions.filter(pl.col("name") == "ram").height:
        regions = pl.concat([regions, inferred_ram(f)])
        notes.append("guest RAM inferred from the faults (no guest_memory in capture.json)")
    else:
        notes.append("guest RAM layout from capture.json")
    in_ram = region_of(f.select("ipa").unique(), regions.filter(pl.col("name") == "ram"))
    f = f.join(in_ram.rename({"region": "ram"}), on="ipa", how="left")
    mmio = pl.col("mmio_evidence").fill_null(False) | pl.col("ram").is_null()
    f = f.with_columns(mmio.alias("mmio"))
    devices = regions.filter(pl.col("name") != "ram")
    if not devices.height:
        devices = device_regions(f.filter("mmio")["ipa"], regions.filter(pl.col("name") == "ram"))
        if is_qemu_virt(regions.filter(pl.col("name") == "ram")):
            notes.append("RAM at 0x40000000: device regions named from the QEMU virt memory map")
    regions = pl.concat([regions, devices]).unique(maintain_order=True)
    named = region_of(f.select("ipa").unique(), devices)
    f = (f.join(named.rename({"region": "device"}), on="ipa", how="left")
         .with_columns(pl.coalesce("device", pl.when(~pl.col("mmio")).then(pl.col("ram")), pl.lit("mmio"))
                       .alias("region"),
                       phase_of(pl.col("t_ns"), phases).alias("phase")))
    schema = {**FAULT_SCHEMA, **EXTRA_SCHEMA}
    return FaultTable(f.sort("idx").select(list(schema)).cast(schema), regions.sort("start"), notes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Summary


KIND_WORDS = {"translation": "first-touch (translation)", "access_flag": "access-flag", "permission": "permission",
              "other": "other"}
GUEST_FAULT_EVENTS = ("page_fault_user", "page_fault_kernel", "mm_filemap_fault", "do_page_fault",
                      "do_mem_abort", "do_translation_fault", "handle_mm_fault")
TIMELINE_BINS = 60


def by_phase(faults: pl.DataFrame) -> pl.DataFrame:
    """Per phase: faults, per kind, RAM vs MMIO, cost (sum of handling_ns), unique pages."""
    k = pl.col("kind")
    return (faults.with_columns(pl.col("phase").fill_null("(none)"))
            .group_by("phase").agg(
                pl.len().cast(pl.UInt32).alias("faults"),
                *[(k == name).sum().cast(pl.UInt32).alias(name) for name in arm64.KINDS],
                (~pl.col("mmio")).sum().cast(pl.UInt32).alias("ram"),
                pl.col("mmio").sum().cast(pl.UInt32).alias("mmio"),
                pl.col("handling_ns").sum().alias("handling_total_ns"),
                (pl.col("ipa") // PAGE).n_unique().cast(pl.UInt32).alias("unique_pages"),
                pl.col("t_ns").min().alias("first_ns"))
            .sort("first_ns").drop("first_ns"))


def by_region(faults: pl.DataFrame) -> pl.DataFrame:
    """Per phase and region: faults, reads, writes, instruction fetches, per kind."""
    return (faults.with_columns(pl.col("phase").fill_null("(none)"))
            .group_by("phase", "region").agg(
                pl.len().cast(pl.UInt32).alias("faults"),
                pl.col("mmio").any().alias("mmio"),
                (pl.col("write") == True).sum().cast(pl.UInt32).alias("writes"),  # noqa: E712
                ((pl.col("write") == False) & ~ifetch()).sum().cast(pl.UInt32).alias("reads"),  # noqa: E712
                ifetch().sum().cast(pl.UInt32).alias("ifetch"),
                pl.col("t_ns").min().alias("first_ns"))
            .sort("first_ns", "faults", descending=[False, True]).drop("first_ns"))


def ifetch() -> pl.Expr:
    """True for instruction-fetch aborts (IABT), by exception class."""
    return pl.col("ec").is_in([arm64.EC_IABT_LOW, arm64.EC_IABT_CUR]).fill_null(False)


def timeline(faults: pl.DataFrame, start_ns: int, end_ns: int, bins: int = TIMELINE_BINS) -> pl.DataFrame:
    """Faults per second in ``bins`` equal slices of [start_ns, end_ns]: bin, start_ns, faults, per_s."""
    width = max(1, -(-(end_ns - start_ns) // bins))
    counts = (faults.filter(pl.col("t_ns").is_between(start_ns, end_ns))
              .group_by(((pl.col("t_ns") - start_ns) // width).cast(pl.Int64).alias("bin")).len())
    grid = pl.DataFrame({"bin": pl.int_range(0, bins, eager=True).cast(pl.Int64)})
    return (grid.join(counts, on="bin", how="left")
            .select("bin", (pl.col("bin") * width + start_ns).alias("start_ns"),
                    pl.col("len").fill_null(0).cast(pl.UInt32).alias("faults"),
                    (pl.col("len").fill_null(0) / (width / 1e9)).alias("per_s")))



def guest_stage1(t: EventTables, phases: pl.DataFrame, offset_ns: int = 0) -> tuple[pl.DataFrame, list[str]]:
    """Stage-1 page faults of a guest-side capture per phase: phase, stage1_faults; and the events used.
    ``offset_ns`` puts guest times on the host clock (then ``phases`` are the host's)."""
    names = [n for n in t.by_event if t.has(n) and (n in GUEST_FAULT_EVENTS or "page_fault" in n
                                                     or n.startswith(("p_do_page_fault", "p_handle_mm_fault")))]
    if not names:
        return pl.DataFrame(schema={"phase": pl.String(), "stage1_faults": pl.UInt32()}), []
    ts = pl.concat([t.table(n).select(pl.col("ts") + offset_ns) for n in names])
    out = (ts.select(phase_of(pl.col("ts"), phases).fill_null("(none)").alias("phase"))
           .group_by("phase").agg(pl.len().cast(pl.UInt32).alias("stage1_faults")))
    return out, names
