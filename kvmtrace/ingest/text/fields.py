"""Turn one event type's payload text (``-R`` name=value or printed form) into typed columns.

Field types come from bundled format files (``kvmtrace/data/formats/<arch>-<kernel>/``), chosen per
event by field names; without a format, columns are inferred (Int64 when every value is an integer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from kvmtrace.fileformats.formats import EventFormat, FieldFormat, parse_event_format
from kvmtrace.ingest.dtypes import field_dtype, lists_of
from kvmtrace.ingest.text.printfmt import FieldRule, PrettyForm, pretty_form, raw_value_rules

FORMAT_ROOT = Path(__file__).resolve().parents[2] / "data" / "formats"
KNOWN_SYSTEMS = ("irq_vectors", "kvmmmu", "sched", "irq", "timer", "ipi", "kvm", "ftrace")
_KEY_RE = r"(?:^|\s)([A-Za-z_]\w*)="
# trace-cmd plugins print some events their own way (and the kvm plugin fails on arm64).
PLUGIN_FORMS: dict[str, list[str]] = {
    "sched_switch": [
        r"^\s*(?P<prev_comm>.*?):(?P<prev_pid>\d+) \[(?P<prev_prio>-?\d+)\] (?P<_state>\S+) ==> "
        r"(?P<next_comm>.*?):(?P<next_pid>\d+) \[(?P<next_prio>-?\d+)\]\s*$",
    ],
    "sched_wakeup": [
        r"^\s*(?P<comm>.*?):(?P<pid>\d+) \[(?P<prio>-?\d+)\](?: success=\d+)? "
        r"CPU:(?P<target_cpu>\d+)\s*$",
    ],
    "sched_waking": [
        r"^\s*(?P<comm>.*?):(?P<pid>\d+) \[(?P<prio>-?\d+)\](?: success=\d+)? "
        r"CPU:(?P<target_cpu>\d+)\s*$",
    ],
    "print": [r"^\s*(?P<_ip>\S+): (?P<buf>.*)$"],
}
# fields printed as kernel symbols (%ps): their numeric value is not in the text
SYMBOL_FIELDS = ("ip", "function")
_PLUGIN_GARBAGE = (
    r"^(?:CAN'T FIND FIELD \"[^\"]*\"|<CANT FIND FIELD [^>]*>|\[FAILED TO PARSE\]\s*)+"
)


@dataclass
class FormatCatalog:
    """Bundled formats by event name (several when kernels/architectures differ)."""

    by_name: dict[str, list[EventFormat]] = field(default_factory=dict)

    def candidates(self, name: str) -> list[EventFormat]:
        return self.by_name.get(name, [])

    def by_field_names(self, name: str, fields: list[str]) -> EventFormat | None:
        """The format whose payload field names are exactly ``fields`` (the -R keys, in order)."""
        for fmt in self.candidates(name):
            if [f.name for f in fmt.payload_fields] == fields:
                return fmt
        for fmt in self.candidates(name):
            if {f.name for f in fmt.payload_fields} == set(fields):
                return fmt
        return None


@lru_cache(maxsize=1)
def bundled_catalog() -> FormatCatalog:
    """Every ``*.format`` under kvmtrace/data/formats, flat files or system subfolders; where two kernels
    define the same event, the newer kernel's format comes first (text carries no field sizes)."""
    catalog = FormatCatalog()
    for path in sorted(FORMAT_ROOT.rglob("*.format"), key=_newest_kernel_first):
        fmt = parse_event_format(path.read_text(), _system_of(path), str(path))
        catalog.by_name.setdefault(fmt.name, []).append(fmt)
    return catalog


def _newest_kernel_first(path: Path) -> tuple[tuple[int, ...], str]:
    """Sort key: the format set's kernel version (``arm64-6.1`` -> (6, 1)), newest first."""
    kernel_dir = path.relative_to(FORMAT_ROOT).parts[0]
    version = tuple(int(x) for x in re.findall(r"\d+", kernel_dir.rsplit("-", 1)[-1]))
    return tuple(-v for v in version), str(path)


def _system_of(path: Path) -> str:
    if path.parent.parent != FORMAT_ROOT:
        return path.parent.name
    for system in KNOWN_SYSTEMS:
        if path.stem.startswith(system + "_"):
            return system
    return "kvm"


@dataclass
class PayloadResult:
    """One event type's typed table (without key columns) and how it was read."""

    columns: pl.DataFrame
    fmt: EventFormat | None
    how: str  # "raw", "pretty", "plugin", "inferred", "none"
    unmatched: int = 0  # rows whose payload matched no known form


def raw_keys(sample: str) -> list[str]:
    """Field names of a -R payload (``a=1 b=x y c=2`` -> [a, b, c]); none when a name comes twice
    (no event has two fields of one name: not a -R payload)."""
    keys = re.findall(_KEY_RE, sample)
    return keys if len(set(keys)) == len(keys) else []


def raw_pattern(names: list[str]) -> str:
    """Regex for ``n1=v1 n2=v2 ...`` with exactly these names in order (values may hold spaces)."""
    parts = [
        f"{'' if i == 0 else ' '}{re.escape(n)}=(?P<{_group(n)}>.*?)" for i, n in enumerate(names)
    ]
    return r"^\s*" + "".join(parts) + r"\s*$" if names else r"^\s*$"


def _group(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_]\w*", name) else "_" + re.sub(r"\W", "_", name)


def parse_payload(name: str, rest: pl.Series, catalog: FormatCatalog) -> PayloadResult:
    """Parse one event type's payload texts: -R form first, then plugin and printed forms."""
    texts = rest.str.replace(_PLUGIN_GARBAGE, "")
    raw = _raw_result(name, texts, catalog)
    if raw is not None and _complete(raw.columns):
        return raw
    pretty = _from_pretty(name, texts, catalog)
    if raw is not None and _filled(raw.columns) >= _filled(pretty.columns):
        return raw
    return pretty


def _raw_result(name: str, texts: pl.Series, catalog: FormatCatalog) -> PayloadResult | None:
    for fmt in catalog.candidates(name):
        keys = [f.name for f in fmt.payload_fields]
        if keys and _all_match(texts, raw_pattern(keys)):
            return _from_raw(texts, keys, fmt)
    sample = texts.drop_nulls().head(1)
    keys = raw_keys(sample[0]) if sample.len() else []
    if keys and _all_match(texts, raw_pattern(keys)):
        return _from_raw(texts, keys, catalog.by_field_names(name, keys))
    return None


def _complete(columns: pl.DataFrame) -> bool:
    """No field came out null (symbol-printed fields like ``ip=tracing_mark_write`` aside)."""
    return _filled(columns) == columns.height * columns.width - _symbol_columns(columns)


def _symbol_columns(columns: pl.DataFrame) -> int:
    return sum(columns[c].null_count() for c in columns.columns if c in SYMBOL_FIELDS)


def _filled(columns: pl.DataFrame) -> int:
    return columns.height * columns.width - sum(columns.null_count().row(0)) if columns.width else 0


def _all_match(texts: pl.Series, pattern: str) -> bool:
    return bool(texts.str.contains(pattern).all())


def _from_raw(texts: pl.Series, keys: list[str], fmt: EventFormat | None) -> PayloadResult:
    groups = texts.str.extract_groups(raw_pattern(keys)).struct.unnest()
    groups.columns = keys
    if fmt is None:
        return PayloadResult(_infer(groups), None, "inferred")
    rules = raw_value_rules(fmt)
    return PayloadResult(_typed(groups, fmt, rules), fmt, "raw")


def _from_pretty(name: str, texts: pl.Series, catalog: FormatCatalog) -> PayloadResult:
    best: tuple[int, pl.DataFrame, EventFormat | None, str] | None = None
    for pattern, fmt, rules, how in _pretty_candidates(name, catalog):
        matched = texts.str.extract_groups(pattern).struct.unnest()
        hits = matched.height - int(
            matched.select(pl.all_horizontal(pl.all().is_null())).sum().item()
        )
        if best is None or hits > best[0]:
            typed = _typed(matched, fmt, rules) if fmt is not None else _infer(matched)
            best = (hits, typed, fmt, how)
        if hits == texts.len():
            break
    if best is None or best[0] == 0:
        fmt = catalog.candidates(name)[0] if catalog.candidates(name) else None
        return PayloadResult(_unparsed(fmt, texts), fmt, "none", texts.len())
    hits, typed, fmt, how = best
    return PayloadResult(typed, fmt, how, texts.len() - hits)


def _pretty_candidates(
    name: str,
    catalog: FormatCatalog,
) -> list[tuple[str, EventFormat | None, dict[str, FieldRule], str]]:
    out: list[tuple[str, EventFormat | None, dict[str, FieldRule], str]] = []
    fmts = catalog.candidates(name)
    plugin_fmts: list[EventFormat | None] = list(fmts) if fmts else [None]
    for pattern in PLUGIN_FORMS.get(name, []):
        for fmt in plugin_fmts:
            rules = raw_value_rules(fmt) if fmt is not None else {}
            out.append((pattern, fmt, rules, "plugin"))
    for fmt in fmts:
        form: PrettyForm | None = pretty_form(fmt)
        if form is not None:
            out.append((form.pattern, fmt, form.rules, "pretty"))
    return out


def _unparsed(fmt: EventFormat | None, texts: pl.Series) -> pl.DataFrame:
    """Rows whose payload could not be read: the format's fields as typed nulls, or, with no
    format field to put them in, the payload text itself (column ``payload``), so nothing is lost."""
    fields = fmt.payload_fields if fmt is not None else []
    if not fields:
        return pl.DataFrame({"payload": texts.cast(pl.String)})
    height = texts.len()
    return pl.DataFrame(
        {f.name: pl.Series(f.name, [None] * height, dtype=field_dtype(f)) for f in fields},
        height=height,
    )


def _typed(
    groups: pl.DataFrame, fmt: EventFormat | None, rules: dict[str, FieldRule]
) -> pl.DataFrame:
    """Cast the captured texts to the format's dtypes; fields not captured become typed nulls."""
    assert fmt is not None
    exprs: list[pl.Expr | pl.Series] = []
    for f in fmt.payload_fields:
        if f.name not in groups.columns:
            exprs.append(pl.lit(None, dtype=field_dtype(f)).alias(f.name))
        elif isinstance(field_dtype(f), pl.List):
            exprs.append(array_values(groups[f.name], f))
        else:
            exprs.append(typed_value(pl.col(f.name), f, rules.get(f.name)).alias(f.name))
    names = [f.name for f in fmt.payload_fields]
    return groups.with_columns(exprs).select(names)


def array_values(texts: pl.Series, f: FieldFormat) -> pl.Series:
    """An integer array as ``trace-cmd report -R`` prints it, its bytes in memory order
    (``ARRAY[08, 00, 00, 00, ...]``), to one list per row of ``f``'s elements (little endian: the
    text does not say; x86 and arm64 are). A row whose text is not such a list, or whose byte
    count is not a whole number of elements, is null."""
    dtype = field_dtype(f)
    assert isinstance(dtype, pl.List)
    elem = max(1, f.element_size)
    body = texts.str.strip_chars().str.extract(r"^ARRAY\[([0-9a-fA-F, ]*)\]$", 1)
    parts = body.str.split(", ").list.eval(pl.element().filter(pl.element() != ""))
    n_bytes = parts.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = parts.explode(empty_as_null=False, keep_nulls=False).str.to_integer(base=16, strict=False)
    row = np.repeat(np.arange(len(texts), dtype=np.int64), n_bytes)
    unread = flat.is_null().to_numpy() | (flat.fill_null(0).to_numpy() > 0xFF)
    bad = body.is_null().to_numpy() | (n_bytes % elem != 0)
    bad[row[unread]] = True
    keep = ~bad[row]
    raw = flat.fill_null(0).to_numpy()[keep].astype(np.uint8)
    counts = np.where(bad, 0, n_bytes // elem)
    code = f"<{'i' if f.signed else 'u'}{elem}"
    values = pl.Series(f.name, np.frombuffer(raw.tobytes(), dtype=code), dtype=dtype.inner)
    lists = lists_of(values, counts, dtype)
    return pl.select(pl.when(pl.Series(bad)).then(None).otherwise(lists).alias(f.name)).to_series()



def typed_value(text: pl.Expr, f: FieldFormat, rule: FieldRule | None) -> pl.Expr:
    """One field's text (as printed) to its format dtype; what cannot be read becomes null."""
    dtype = field_dtype(f)
    if f.is_string:
        return text.cast(pl.String)
    if isinstance(dtype, pl.List):
        return pl.lit(None, dtype=dtype)
    if rule is not None and rule.symbols:
        text = _unsymbol(text, rule.symbols)
    hex_default = rule is not None and (rule.hex or rule.conversion == "s")
    value = parse_int(text, hex_default, 8 * f.size if not f.is_bool else 8, f.signed)
    if f.is_bool:
        return value.cast(pl.Int64) != 0
    return value.cast(dtype, strict=False)


def _unsymbol(text: pl.Expr, symbols: dict[str, int]) -> pl.Expr:
    """Replace printed symbol words by their numeric value; other texts stay as they are."""
    words = list(symbols)
    values = [str(symbols[w]) for w in words]
    stripped = text.str.strip_chars()
    return stripped.replace_strict(words, values, default=stripped, return_dtype=pl.String)


def parse_int(text: pl.Expr, hex_default: bool, bits: int, signed: bool) -> pl.Expr:
    """Decimal or hex text (``-4``, ``0x1c``, ``1c`` if hex_default) to a ``bits`` integer."""
    s = text.str.strip_chars()
    negative = s.str.starts_with("-")
    body = s.str.strip_prefix("-")
    is_hex = body.str.starts_with("0x") | body.str.starts_with("0X") | pl.lit(hex_default)
    digits = body.str.strip_prefix("0x").str.strip_prefix("0X")
    magnitude = (
        pl.when(is_hex)
        .then(digits.str.to_integer(base=16, dtype=pl.UInt64, strict=False))
        .otherwise(digits.str.to_integer(base=10, dtype=pl.UInt64, strict=False))
    )
    as_int = magnitude.reinterpret(signed=True)
    as_int = pl.when(negative).then(-as_int).otherwise(as_int)
    if bits >= 64:
        return as_int.reinterpret(signed=signed)
    mask = (1 << bits) - 1
    low = as_int & mask
    if signed:
        return pl.when(low >= (1 << (bits - 1))).then(low - (1 << bits)).otherwise(low)
    return low


def _infer(groups: pl.DataFrame) -> pl.DataFrame:
    """Without a format: Int64 where every value reads as an integer (UInt64 where they are all written
    in hex, none negative: addresses and pointers, as a format file's ``void *`` gives them), String
    otherwise."""
    exprs = []
    for name in groups.columns:
        col = groups[name]
        values = col.drop_nulls().str.strip_chars()
        unsigned = values.len() > 0 and bool(values.str.starts_with("0x").all())
        as_int = groups.select(parse_int(pl.col(name), False, 64, not unsigned)).to_series()
        all_int = as_int.null_count() == col.null_count() and col.drop_nulls().len() > 0
        exprs.append(as_int.alias(name) if all_int else col.alias(name))
    return pl.DataFrame(exprs) if exprs else pl.DataFrame(height=groups.height)
