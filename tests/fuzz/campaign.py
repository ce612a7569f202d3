"""The structure-aware campaign: seeds from the bundled captures, one mutation per input, each input
through ``info --json`` and ``analyze`` (``--no-cache``) with one engine, outcomes counted, failing
inputs kept, accepted trace.dat inputs compared with ``trace-cmd report``.

Run it with scripts/fuzz/campaign.py (its ``--help``); figures are in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz import mutations as mu
from tests.fuzz.model import DatModel, from_capture
from tests.fuzz.oracle import compare, have_trace_cmd
from tests.fuzz.runner import ForkExecutor, Job, Outcome, SubprocessExecutor, cli_jobs

ROOT = Path(__file__).resolve().parents[2]
DAT_SEEDS = ("captures/board-vhe-hog/trace.dat", "captures/arm64-vhe-cyclictest/trace.dat",
             "captures/x86-host-cyclictest-stress/trace.dat", "tests/fixtures/board-device-irq/trace.dat")
MANIFEST_SEED = "tests/fixtures/board-device-irq/capture.json"
TEXT_FIXTURE = "tests/fixtures/text/kernel_trace.txt"
REPORT_FLAVOURS = (["-N", "-t", "-R"], ["-t"], [], ["-l"], ["-N"])
ORDER = ("crash", "hang", "memory", "traceback", "bad-exit2", "silent-diff", "exit2", "accepted")
LABELS = {"crash": "segfault / abort", "hang": "hang > timeout", "memory": "MemoryError at 4 GiB",
          "traceback": "Python traceback", "bad-exit2": "exit 2 without the one line",
          "silent-diff": "accepted, event counts differ from trace-cmd silently",
          "exit2": "the promised one line, exit 2", "accepted": "accepted (read)"}
CATEGORIES = (("model", 40), ("bytes", 25), ("text", 17), ("dir", 13), ("special", 5))


@dataclass
class Seeds:
    models: dict[str, DatModel]
    files: dict[str, bytes]  # written small seeds and the real captures
    texts: dict[str, bytes]
    manifest: dict[str, object]


def make_seeds(work: Path) -> Seeds:
    """Small models of each seed capture (a few pages per CPU), their files and text reports."""
    models = {Path(p).parent.name: from_capture(ROOT / p) for p in DAT_SEEDS}
    files: dict[str, bytes] = {}
    texts: dict[str, bytes] = {"kernel_trace": (ROOT / TEXT_FIXTURE).read_bytes()}
    for name, model in models.items():
        path = work / f"seed-{name}.dat"
        model.write(path)
        files[name] = path.read_bytes()
        for k, flags in enumerate(REPORT_FLAVOURS):
            out = subprocess.run(["trace-cmd", "report", *flags, "-i", str(path)], capture_output=True, check=False)
            if out.returncode == 0 and out.stdout:
                texts[f"{name}-report{k}"] = out.stdout
    for p in DAT_SEEDS[:2]:
        files[f"real-{Path(p).parent.name}"] = (ROOT / p).read_bytes()
    manifest = json.loads((ROOT / MANIFEST_SEED).read_text())
    return Seeds(models, files, texts, manifest)


@dataclass
class Result:
    """One input and how it went."""

    number: int
    category: str
    mutation: str
    detail: str
    seed: str
    engine: str
    outcome: str
    summary: str
    diff: str = ""
    seconds: float = 0.0


class Generator:
    """Makes input number ``n`` of a campaign (reproducible from the campaign seed)."""

    def __init__(self, seeds: Seeds, work: Path, seed: int) -> None:
        self.seeds = seeds
        self.work = work
        self.seed = seed

    def make(self, n: int) -> tuple[Path, str, str, str, str]:
        """(path, category, mutation, detail, seed name) of input ``n``."""
        rng = random.Random(f"{self.seed}-{n}")
        category = rng.choices([c for c, _ in CATEGORIES], [w for _, w in CATEGORIES])[0]
        folder = self.work / f"in-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        make: Callable[[random.Random, Path], tuple[Path, str, str, str]] = getattr(self, f"_{category}")
        path, mutation, detail, seed = make(rng, folder)
        return path, category, mutation, detail, seed

    def _model(self, rng: random.Random, folder: Path) -> tuple[Path, str, str, str]:
        seed = rng.choice(sorted(self.seeds.models))
        model = self.seeds.models[seed].copy()
        if rng.random() < 0.4:
            mu.version_switch(rng, model)
        names = [n for n in mu.MODEL_MUTATIONS if n != "version"]
        mutation = rng.choice(names)
        detail = mu.MODEL_MUTATIONS[mutation](rng, model)
        path = folder / "trace.dat"
        model.write(path)
        return path, mutation, detail, seed

    def _bytes(self, rng: random.Random, folder: Path) -> tuple[Path, str, str, str]:
        seed = rng.choice(sorted(self.seeds.files))
        data = bytearray(self.seeds.files[seed])
        mutation = rng.choice(sorted(mu.BYTE_MUTATIONS))
        detail = mu.BYTE_MUTATIONS[mutation](rng, data)
        path = folder / "trace.dat"
        path.write_bytes(bytes(data))
        return path, mutation, detail, seed

    def _text(self, rng: random.Random, folder: Path) -> tuple[Path, str, str, str]:
        seed = rng.choice(sorted(self.seeds.texts))
        mutation = rng.choice(sorted(mu.TEXT_MUTATIONS))
        data, detail = mu.TEXT_MUTATIONS[mutation](rng, self.seeds.texts[seed])
        path = folder / "trace.txt"
        path.write_bytes(data)
        return path, mutation, detail, seed

    def _dir(self, rng: random.Random, folder: Path) -> tuple[Path, str, str, str]:
        doc = json.loads(json.dumps(self.seeds.manifest))
        mutation = rng.choice(sorted(mu.MANIFEST_MUTATIONS))
        detail = mu.MANIFEST_MUTATIONS[mutation](rng, doc)
        encoding = mu.write_manifest(folder, doc, rng, detail)
        (folder / "trace.dat").write_bytes(self.seeds.files["board-device-irq"])
        return folder, mutation, f"{detail} ({encoding})", "board-device-irq"

    def _special(self, rng: random.Random, folder: Path) -> tuple[Path, str, str, str]:
        kind = rng.choice(mu.SPECIAL_FILES)
        return mu.special_folder(rng, folder, kind), "special file", kind, "-"


@dataclass
class Campaign:
    """Runs inputs until the count or the time is reached; keeps every result."""

    work: Path
    seed: int = 1
    executor: ForkExecutor | SubprocessExecutor | None = None
    parallel: int = 2
    numpy_share: float = 0.25
    results: list[Result] = field(default_factory=list)
    keep: Path | None = None  # failing inputs are copied here

    def run(self, count: int | None, minutes: float | None, log: Callable[[str], None] = print) -> list[Result]:
        self.work.mkdir(parents=True, exist_ok=True)
        gen = Generator(make_seeds(self.work), self.work, self.seed)
        executor = self.executor or ForkExecutor()
        deadline = time.monotonic() + 60 * minutes if minutes else None
        oracle = have_trace_cmd()
        for n in _numbers(count):
            if deadline is not None and time.monotonic() > deadline:
                break
            result = self._one(gen, executor, n, oracle)
            self.results.append(result)
            if result.outcome not in ("exit2", "accepted"):
                log(f"#{n} {result.engine} {result.mutation} [{result.detail}]: {result.summary} {result.diff}")
        return self.results

    def _one(self, gen: Generator, executor: ForkExecutor | SubprocessExecutor, n: int, oracle: bool) -> Result:
        started = time.monotonic()
        path, category, mutation, detail, seed = gen.make(n)
        engine = "numpy" if random.Random(f"engine-{self.seed}-{n}").random() < self.numpy_share else "native"
        outcomes = executor.run_all(cli_jobs(str(path), [engine]), self.parallel)
        worst = _worst(outcomes)
        info = outcomes[0]
        kind = "accepted" if worst.kind == "exit2" and info.kind == "accepted" else worst.kind  # analysis refused
        result = Result(n, category, mutation, detail, seed, engine, kind, worst.summary(),
                        seconds=time.monotonic() - started)
        if oracle and kind == "accepted" and path.is_file():
            diff = compare(str(path), info.stdout)
            if diff is not None and diff.differs:
                result.diff = diff.describe()
                if diff.silent:
                    result.outcome = "silent-diff"
        if result.outcome not in ("exit2", "accepted") and self.keep is not None:
            _keep(path, self.keep / f"{n}-{result.outcome}", result)
        shutil.rmtree(path if path.is_dir() else path.parent, ignore_errors=True)
        return result


def _numbers(count: int | None) -> Iterator[int]:
    n = 0
    while count is None or n < count:
        yield n
        n += 1


def _worst(outcomes: list[Outcome]) -> Outcome:
    return min(outcomes, key=lambda o: ORDER.index(o.kind) if o.kind in ORDER else 0)


def _keep(path: Path, dest: Path, result: Result) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        for item in path.iterdir():
            if item.is_file() and not item.is_symlink() and item.stat().st_size < 64 << 20:
                shutil.copyfile(item, dest / item.name)
    elif path.is_file() and path.stat().st_size < 64 << 20:
        shutil.copyfile(path, dest / path.name)
    (dest / "result.json").write_text(json.dumps(result.__dict__, indent=1) + "\n")


def table(results: list[Result]) -> str:
    """The figures as a markdown table: outcomes per engine."""
    engines = ("native", "numpy")
    counts = {e: Counter(r.outcome for r in results if r.engine == e) for e in engines}
    rows = ["| outcome | native engine | numpy engine |", "|---|---|---|",
            "| inputs | " + " | ".join(f"{sum(counts[e].values()):,}" for e in engines) + " |"]
    for kind in ORDER:
        rows.append(f"| {LABELS[kind]} | " + " | ".join(f"{counts[e][kind]:,}" for e in engines) + " |")
    return "\n".join(rows)


def by_mutation(results: list[Result]) -> str:
    """Inputs and failures per category and mutation."""
    groups: dict[tuple[str, str], Counter[str]] = {}
    for r in results:
        groups.setdefault((r.category, r.mutation), Counter())[r.outcome] += 1
    lines = ["| category | mutation | inputs | exit 2 | accepted | failures |", "|---|---|---|---|---|---|"]
    for (category, mutation), c in sorted(groups.items()):
        bad = sum(n for k, n in c.items() if k not in ("exit2", "accepted"))
        lines.append(f"| {category} | {mutation} | {sum(c.values())} | {c['exit2']} | {c['accepted']} | {bad} |")
    return "\n".join(lines)


def run_job_direct(args: list[str], engine: str) -> Outcome:
    """One CLI run in a fresh process (the corpus test uses it)."""
    return SubprocessExecutor().run(Job(args, {"KVMTRACE_ENGINE": engine}))
