"""Parse tracefs ``format`` files (events/<system>/<event>/format, header_page) into field layouts.

The one format-file parser: the readers take field layouts from the capture's own format text
(never hard-coded offsets), the writer encodes payloads with the same layouts. Standard library
only (the recorder runs it on small targets); the polars column type of a field is
``kvmtrace.ingest.dtypes.field_dtype``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from kvmtrace.errors import CaptureError

_FIELD_RE = re.compile(
    r"^\s*field:\s*(?P<decl>[^;]+);\s*offset:\s*(?P<offset>\d+);\s*size:\s*(?P<size>\d+);"
    r"(?:\s*signed:\s*(?P<signed>-?\d+);)?"
)
_ARRAY_RE = re.compile(r"^(?P<head>.*?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\[(?P<len>[^\]]*)\]\s*$")
_NAME_RE = re.compile(r"^(?P<head>.*?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass(frozen=True)
class FieldFormat:
    """One field of an event record, as the format file describes it."""

    name: str
    type: str  # the C type as written, e.g. "unsigned long", "char", "__data_loc char[]"
    offset: int
    size: int
    signed: bool
    array_len: int | None = None  # fixed arrays: element count; 0 for a trailing "name[]" (rest of record)
    data_loc: bool = False  # __data_loc: u32 (len << 16 | offset from record start)
    rel_loc: bool = False  # __rel_loc: u32 (len << 16 | offset from the end of this field)

    @property
    def is_string(self) -> bool:
        """char arrays and __data_loc char[] are strings."""
        base = self.type.replace("__data_loc", "").replace("__rel_loc", "").replace("[]", "")
        base = base.replace("const", "").strip()
        return base in ("char", "unsigned char", "signed char") and (
            self.array_len is not None or self.data_loc or self.rel_loc
        )

    @property
    def is_dynamic(self) -> bool:
        return self.data_loc or self.rel_loc

    @property
    def is_bool(self) -> bool:
        return self.type.strip() in ("bool", "_Bool") and self.array_len is None

    @property
    def element_size(self) -> int:
        """Bytes of one element of an array (1, 2, 4 or 8), or the size of a scalar."""
        if self.is_dynamic or self.array_len == 0:  # the C type says (a trailing "buf[]" has size 0)
            base = self.type.replace("__data_loc", "").replace("__rel_loc", "").replace("[]", "")
            return _c_type_size(base.strip())
        if self.array_len:
            size = max(1, self.size // self.array_len)
            return size if size in (1, 2, 4, 8) else 1
        return self.size

    @property
    def ctype(self) -> str:
        """The element's C type: ``char`` for ``__data_loc char[]`` and ``char comm[16]``."""
        base = self.type.replace("__data_loc", "").replace("__rel_loc", "").replace("[]", "")
        return base.replace("const", "").strip()

    @property
    def kind(self) -> str:
        """``scalar``, ``array`` (fixed), ``tail`` (a trailing ``name[]``), ``data_loc`` or ``rel_loc``."""
        if self.data_loc:
            return "data_loc"
        if self.rel_loc:
            return "rel_loc"
        if self.array_len is None:
            return "scalar"
        return "array" if self.array_len else "tail"


@dataclass
class EventFormat:
    """One event type: its id, system, name, fields (common ones included) and print fmt."""

    id: int
    system: str
    name: str
    fields: list[FieldFormat]
    print_fmt: str = ""
    source: str = field(default="", repr=False)

    @property
    def payload_fields(self) -> list[FieldFormat]:
        """The event's own fields, without the common_* header fields."""
        return [f for f in self.fields if not f.name.startswith("common_")]

    @property
    def fixed_size(self) -> int:
        """Bytes of the fixed part of a record (dynamic data follows)."""
        return max((f.offset + f.size for f in self.fields), default=0)

    @property
    def text(self) -> str:
        """The format text it was parsed from."""
        return self.source

    def field(self, name: str) -> FieldFormat | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


_C_SIZES = {
    "char": 1, "unsigned char": 1, "signed char": 1, "u8": 1, "s8": 1, "bool": 1, "__u8": 1,
    "short": 2, "unsigned short": 2, "u16": 2, "s16": 2, "__u16": 2,
    "int": 4, "unsigned int": 4, "u32": 4, "s32": 4, "__u32": 4, "pid_t": 4,
    "u64": 8, "s64": 8, "__u64": 8, "long long": 8, "unsigned long long": 8,
}


def _c_type_size(ctype: str) -> int:
    return _C_SIZES.get(ctype, 1)


def parse_field_line(line: str, path: str | None = None, lineno: int | None = None) -> FieldFormat:
    """One ``field:TYPE NAME; offset:N; size:N; signed:N;`` line. A capture of trace-cmd holds
    every format of the system (thousands), whose lines repeat (the common_* fields in each):
    each distinct line is parsed once (FieldFormat is immutable, so it can be shared)."""
    known = _field_once(line)
    return known if known is not None else _parse_field_line(line, path, lineno)


@functools.lru_cache(maxsize=16384)
def _field_once(line: str) -> FieldFormat | None:
    try:
        return _parse_field_line(line, None, None)
    except CaptureError:
        return None  # parsed again with its file and line number, for the message


def _parse_field_line(line: str, path: str | None, lineno: int | None) -> FieldFormat:
    m = _FIELD_RE.match(line)
    if not m:
        raise CaptureError(path, f"line {lineno}" if lineno else None,
                           f"expected 'field:TYPE NAME; offset:N; size:N; signed:N;', got {line.strip()!r}")
    decl = m.group("decl").strip()
    offset, size = int(m.group("offset")), int(m.group("size"))
    signed_txt = m.group("signed")
    signed = bool(int(signed_txt)) if signed_txt is not None else False
    data_loc = decl.startswith("__data_loc")
    rel_loc = decl.startswith("__rel_loc")
    array_len: int | None = None
    am = _ARRAY_RE.match(decl)
    if am:
        name, ctype = am.group("name"), am.group("head").strip()
        length_txt = am.group("len").strip()
        array_len = int(length_txt, 0) if length_txt.isdigit() else 0
        if data_loc or rel_loc:
            # "__data_loc char[] name": the brackets belong to the type
            array_len = None
    else:
        nm = _NAME_RE.match(decl)
        if not nm:
            raise CaptureError(path, f"line {lineno}" if lineno else None,
                               f"cannot read field declaration {decl!r}")
        name, ctype = nm.group("name"), nm.group("head").strip()
    if data_loc or rel_loc:
        # __data_loc char[] name  -> type "__data_loc char[]", name "name"
        parts = decl.rsplit(None, 1)
        name, ctype = parts[1], parts[0]
    return FieldFormat(name=name, type=ctype, offset=offset, size=size, signed=signed,
                       array_len=array_len, data_loc=data_loc, rel_loc=rel_loc)


def parse_event_format(text: str, system: str = "", path: str | None = None) -> EventFormat:
    """Parse one ``events/<system>/<event>/format`` text."""
    name: str | None = None
    event_id: int | None = None
    fields: list[FieldFormat] = []
    print_fmt = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("name:"):
            name = stripped[5:].strip()
        elif stripped.startswith("ID:"):
            try:
                event_id = int(stripped[3:].strip())
            except ValueError:
                raise CaptureError(path, f"line {lineno}", f"expected a numeric event ID, got {stripped!r}") from None
        elif stripped.startswith("field:"):
            fields.append(parse_field_line(line, path, lineno))
        elif stripped.startswith("print fmt:"):
            print_fmt = stripped[len("print fmt:"):].strip()
    if name is None or event_id is None:
        what = "name:" if name is None else "ID:"
        raise CaptureError(path, None, f"event format without a '{what}' line (system {system!r})")
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            raise CaptureError(path, None, f"event format {system}:{name} declares field {f.name!r} twice")
        seen.add(f.name)
    return EventFormat(id=event_id, system=system, name=name, fields=fields, print_fmt=print_fmt, source=text)


def parse_header_page(text: str, path: str | None = None) -> dict[str, FieldFormat]:
    """Parse ``events/header_page``: timestamp, commit (its size is the kernel's long), data."""
    out: dict[str, FieldFormat] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("field:"):
            f = parse_field_line(line, path, lineno)
            out[f.name] = f
    for needed in ("timestamp", "commit", "data"):
        if needed not in out:
            raise CaptureError(path, None, f"header_page has no '{needed}' field")
    return out


parse_format = parse_event_format  # the writer's name for it
