"""Read an event's ``print fmt`` into a regex for its printed form and the per-field value rules.

The kernel (tracefs ``trace``) and ``trace-cmd report -N`` print each event with its print fmt; -R
prints ``name=value`` using the same conversion as the print fmt where the argument is a plain
``REC->field``. So the print fmt tells both how to find a field in pretty text and whether a bare
value (``rax=1c``, ``hrtimer=0000000025574619``) is hexadecimal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kvmtrace.fileformats.formats import EventFormat

_SPEC_RE = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?(?P<len>hh|h|ll|l|z|L|j|t)?"
    r"(?P<conv>p[sSBfFKxRr]?|[diouxXcs%])"
)
_DIRECT_ARG_RE = re.compile(r"^\s*(?:\([^()]*\)\s*)*\(?\s*REC->(\w+)\s*\)?\s*$")
_GET_STR_RE = re.compile(r"^\s*__get_(?:str|rel_str)\(\s*(\w+)\s*\)\s*$")
_SYMBOLIC_RE = re.compile(r"^\s*__print_symbolic\(\s*\(?\s*(?:\([^()]*\)\s*)?REC->(\w+)")
_SYMBOL_PAIR_RE = re.compile(r"\{\s*\(?\s*([-\w]+)\s*\)?\s*,\s*\"([^\"]*)\"\s*\}")
_TERNARY_RE = re.compile(
    r"^\s*\(?\s*REC->(\w+)\s*\)?\s*\?\s*(\"[^\"]*\"|'.')\s*:\s*(\"[^\"]*\"|'.')\s*$"
)

HEX_CONVERSIONS = ("x", "X", "p", "px", "pK")
SYMBOL_CONVERSIONS = ("ps", "pS", "pB", "pf", "pF", "pR", "pr")


@dataclass
class FieldRule:
    """How one field appears in printed text."""

    name: str
    conversion: str  # printf conversion: d, u, x, s, p, ps, ...
    symbols: dict[str, int] = field(
        default_factory=dict
    )  # printed word -> value (symbolic, ternary)

    @property
    def hex(self) -> bool:
        return self.conversion in HEX_CONVERSIONS

    @property
    def symbolic(self) -> bool:
        return self.conversion in SYMBOL_CONVERSIONS


@dataclass
class PrettyForm:
    """A regex for an event's printed form: named groups are fields (``_n``: ignored parts)."""

    pattern: str
    rules: dict[str, FieldRule]  # group name (= field name) -> how to read it


def split_print_fmt(print_fmt: str) -> tuple[str, list[str]]:
    """Split ``"fmt", arg1, arg2`` into the (unescaped) format string and the argument texts."""
    text = print_fmt.strip()
    fmt_parts: list[str] = []
    pos = 0
    while pos < len(text) and text[pos] == '"':
        end = _string_end(text, pos)
        fmt_parts.append(_unescape(text[pos + 1 : end]))
        pos = end + 1
        while pos < len(text) and text[pos].isspace():
            pos += 1
    rest = text[pos:].lstrip()
    if rest.startswith(","):
        rest = rest[1:]
    return "".join(fmt_parts), _split_args(rest) if rest.strip() else []


def _string_end(text: str, start: int) -> int:
    pos = start + 1
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
            continue
        if text[pos] == '"':
            return pos
        pos += 1
    return len(text)


def _unescape(body: str) -> str:
    return body.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"').replace("\\\\", "\\")


def _split_args(text: str) -> list[str]:
    args: list[str] = []
    depth = 0
    current: list[str] = []
    quote: str | None = None
    prev = ""
    for ch in text:
        if quote:
            if ch == quote and prev != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            prev = ch
            continue
        current.append(ch)
        prev = ch
    if "".join(current).strip():
        args.append("".join(current).strip())
    return args


def field_rules(fmt: EventFormat) -> list[tuple[str, FieldRule | None]]:
    """Each conversion of the print fmt, in order, with the field it prints (or None)."""
    fmt_text, args = split_print_fmt(fmt.print_fmt)
    names = {f.name for f in fmt.payload_fields}
    out: list[tuple[str, FieldRule | None]] = []
    arg_index = 0
    for spec in _SPEC_RE.finditer(fmt_text):
        conv = spec.group("conv")
        if conv == "%":
            continue
        arg_index += (spec.group("width") == "*") + (spec.group("prec") == "*")
        arg = args[arg_index] if arg_index < len(args) else ""
        arg_index += 1
        out.append((conv, _rule_for_arg(arg, conv, names)))
    return out


def _rule_for_arg(arg: str, conv: str, names: set[str]) -> FieldRule | None:
    for regex in (_DIRECT_ARG_RE, _GET_STR_RE):
        m = regex.match(arg)
        if m and m.group(1) in names:
            return FieldRule(m.group(1), conv)
    m = _SYMBOLIC_RE.match(arg)
    if m and m.group(1) in names:
        return FieldRule(m.group(1), "sym", _symbol_table(arg))
    m = _TERNARY_RE.match(arg)
    if m and m.group(1) in names:
        return FieldRule(m.group(1), "sym", {m.group(2)[1:-1]: 1, m.group(3)[1:-1]: 0})
    return None


def _symbol_table(arg: str) -> dict[str, int]:
    table: dict[str, int] = {}
    for value_text, word in _SYMBOL_PAIR_RE.findall(arg):
        try:
            table.setdefault(word, int(value_text, 0))
        except ValueError:
            continue
    return table


def raw_value_rules(fmt: EventFormat) -> dict[str, FieldRule]:
    """Per field, the conversion -R uses: the print fmt's one when the argument is a plain field."""
    rules: dict[str, FieldRule] = {}
    for _conv, rule in field_rules(fmt):
        if rule is not None and rule.conversion != "sym" and rule.name not in rules:
            rules[rule.name] = rule
    return rules


def pretty_form(fmt: EventFormat) -> PrettyForm | None:
    """A regex matching the event as the kernel prints it (tracefs trace, trace-cmd report -N)."""
    fmt_text, _ = split_print_fmt(fmt.print_fmt)
    if not fmt_text:
        return None
    rules_in_order = field_rules(fmt)
    pieces: list[str] = [r"^\s*"]
    rules: dict[str, FieldRule] = {}
    pos = 0
    specs = [s for s in _SPEC_RE.finditer(fmt_text) if s.group("conv") != "%"]
    for index, spec in enumerate(specs):
        pieces.append(_literal(fmt_text[pos : spec.start()], first=pos == 0))
        pos = spec.end()
        conv, rule = rules_in_order[index]
        last = index == len(specs) - 1 and not fmt_text[pos:].strip()
        group = _group_name(rule, rules, index)
        if rule is not None and group == rule.name:
            rules[rule.name] = rule
        pieces.append(f"(?P<{group}>{_value_regex(conv, last)})")
    pieces.append(_literal(fmt_text[pos:], first=pos == 0) + r"\s*$")
    return PrettyForm("".join(pieces), rules)


def _group_name(rule: FieldRule | None, taken: dict[str, FieldRule], index: int) -> str:
    if rule is None or rule.name in taken:
        return f"_{index}"
    return rule.name


def _literal(text: str, first: bool) -> str:
    if first:
        text = text.lstrip()
    escaped = re.escape(text)
    escaped = re.sub(r"(?:\\ |\\\n|\\\t)+", lambda _: r"\s+", escaped)
    return escaped


def _value_regex(conv: str, last: bool) -> str:
    if conv in ("d", "i"):
        return r"\s*-?\d+"
    if conv in ("u", "o"):
        return r"\s*-?\d+"
    if conv in ("x", "X"):
        return r"\s*-?(?:0[xX])?[0-9a-fA-F]+"
    if conv == "c":
        return r".+?"
    if conv.startswith("p"):
        return r"\S+"
    return r".*" if last else r".*?"
