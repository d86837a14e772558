"""The search index at library scale: size, indexing rate, query latency, and what indexing
costs the daemon's job recording.

    python bench/search.py                 # 100,000 files, as the issue sizes it
    python bench/search.py --quick         # 2,000 files: a smoke run for CI

Builds a journal of synthetic done files through the journal's own methods (``enqueue``,
``lease``, ``done`` with passages), exactly as the daemon records a job: per file a caption, 8
tags, and for 20% of them 3 OCR pages of ~1,500 characters, English and Russian (Zipf-distributed
pseudo-words, the queried words planted in 1% of the captions or pages). Prints JSON
lines: the index size on disk and rows/s while indexing; p50/p95 (and max) query time for a
word, a phrase, a substring and a Cyrillic phrase, 50 runs each; and job recording throughput
with and without the index, measured in the same run on fresh journals (the ratio is the cost).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smolvlm_watch.journal import Finished, Journal
from smolvlm_watch.search import Passage

QUERIES = {"word": "sunset", "phrase": '"contract delivery"', "substring": "ntrac", "cyrillic": '"договор поставки"'}
# Planted in a share of the files, as a real library has them: a caption word in 1% of captions,
# the phrases in 1% of OCR pages. The rest is Zipf-distributed pseudo-words, 5,000 per language.
PLANTED = {"caption": ("sunset", "закат"), "ocr": ("contract delivery", "договор поставки")}
SHARE = 0.01


def vocabulary(rng: random.Random, syllables: list[str], n: int = 5000) -> list[str]:
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n)]


class Corpus:
    """Seeded text: English and Russian pseudo-words with Zipf frequencies."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        latin = [c + v for c in "bcdfghklmnprstvw" for v in "aeiou"]
        cyrillic = [c + v for c in "бвгдзклмнпрстфх" for v in "аеиоуя"]
        self.words = {"en": vocabulary(self.rng, latin), "ru": vocabulary(self.rng, cyrillic)}
        self.cum = list(itertools.accumulate(1 / (rank + 1) for rank in range(5000)))  # Zipf

    def text(self, lang: str, chars: int, planted: str | None = None) -> str:
        out: list[str] = []
        length = 0
        while length < chars:
            more = self.rng.choices(self.words[lang], cum_weights=self.cum, k=8)
            out += more
            length += sum(len(w) + 1 for w in more)
        if planted and self.rng.random() < SHARE:
            out.insert(self.rng.randrange(len(out)), planted)
        return " ".join(out)[:chars + 40]

    def passages(self, i: int) -> list[Passage]:
        lang = "en" if i % 2 else "ru"
        k = 0 if lang == "en" else 1
        found = [Passage("caption", self.text(lang, 120, PLANTED["caption"][k])),
                 Passage("tags", ", ".join(self.rng.sample(self.words[lang][:200], 8)))]
        if i % 5 == 0:
            found += [Passage("ocr", self.text(lang, 1500, PLANTED["ocr"][k]), page=p) for p in (1, 2, 3)]
        return found


def record(journal: Journal, texts: list[list[Passage]], index: bool) -> float:
    """Files recorded per second: enqueue, lease, done (with their passages, or without)."""
    start = time.perf_counter()
    for i, found in enumerate(texts):
        path = f"/library/{i // 1000:03d}/photo-{i:06d}.jpg"
        journal.enqueue(path, "/library", 1000 + i, 1.0e9 + i)
        job = journal.lease(900)
        assert job is not None
        journal.done(job.id, Finished(f"{i:064x}", "fp", 1.0, 1000 + i, 1.0e9 + i, {}, found if index else None,
                                      "image"))
    return len(texts) / (time.perf_counter() - start)


def query_times(journal: Journal, runs: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, query in QUERIES.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            journal.index.search(query, limit=20)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[name] = {"p50_ms": round(statistics.median(times), 2),
                     "p95_ms": round(times[int(len(times) * 0.95) - 1], 2), "max_ms": round(times[-1], 2),
                     "hits": len(journal.index.search(query, limit=20))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=50, help="runs per query")
    p.add_argument("--quick", action="store_true", help="2,000 files, 10 runs per query")
    args = p.parse_args(argv)
    files, runs = (2000, 10) if args.quick else (args.files, args.runs)
    with tempfile.TemporaryDirectory(prefix="smolvlm-search-bench-") as tmp:
        corpus = Corpus(1)
        texts = [corpus.passages(i) for i in range(files)]  # made before the clock starts
        journal = Journal(Path(tmp) / "big" / "journal.sqlite")
        rate = record(journal, texts, index=True)
        rows, size = journal.index.stats()
        print(json.dumps({"files": files, "passages": rows, "index_mb": round((size or 0) / 2**20, 1),
                          "journal_mb": round((Path(tmp) / "big" / "journal.sqlite").stat().st_size / 2**20, 1),
                          "files_indexed_per_s": round(rate, 1), "passages_per_s": round(rate * rows / files, 1)}),
              flush=True)
        print(json.dumps({"queries": query_times(journal, runs)}), flush=True)
        journal.close()
        sample = min(files, 5000)
        rates: dict[str, list[float]] = {"with_index": [], "without_index": []}
        for rep in range(3):  # alternated, fresh journals: the machine's noise hits both
            for key, index in (("without_index", False), ("with_index", True)):
                j = Journal(Path(tmp) / f"{key}-{rep}" / "journal.sqlite")
                rates[key].append(record(j, texts[rep * sample % files:][:sample] or texts[:sample], index))
                j.close()
        with_, without = statistics.median(rates["with_index"]), statistics.median(rates["without_index"])
        print(json.dumps({"recording_files": sample,
                          "jobs_per_s_without_index": [round(r, 1) for r in rates["without_index"]],
                          "jobs_per_s_with_index": [round(r, 1) for r in rates["with_index"]],
                          "recording_ms_added_per_job": round((1 / with_ - 1 / without) * 1000, 3),
                          "recording_ratio": round(without / with_, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
