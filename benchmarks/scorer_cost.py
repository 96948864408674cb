"""What one avoid check costs: scoring 32 sentences against 3 topics (not a test).

Loads the scorer (default: the packaged all-MiniLM-L6-v2), then times ``scorer.score(32 sentences,
3 topics)``: the first call (topic embeddings not cached yet) and ``--repeats`` warm calls (topics
cached, so only the 32 sentences are embedded). Prints milliseconds.

    python benchmarks/scorer_cost.py [--spec embedding] [--device cpu] [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch

from redraft.workers.scorers import load_scorer

SENTENCES = [
    "The committee met on Tuesday to review the proposal.",
    "He loaded the rifle and waited behind the wall.",
    "Preheat the oven and grease a round cake tin.",
    "Take two tablets every four hours, but never more than eight a day.",
    "The river froze early that winter, and the ferries stopped running.",
    "She signed the lease for the flat above the bakery.",
    "A stray shell hit the market square just after noon.",
    "Stir the sauce until it thickens, then season it with salt.",
    "The quarterly figures were better than the analysts expected.",
    "If the fever lasts more than three days, see a doctor.",
    "They walked along the cliffs until the fog rolled in.",
    "The new library opens on Saturday with a reading for children.",
    "The soldiers fixed bayonets and advanced on the trench.",
    "Knead the dough for ten minutes and leave it to rise.",
    "Our train was delayed by a signal failure outside the station.",
    "The patient was given antibiotics and kept overnight.",
    "He wrote the letter twice before he was happy with it.",
    "A gust of wind carried the umbrella across the street.",
    "The museum lent three paintings to a gallery in Madrid.",
    "The attacker stabbed him twice and fled on a motorbike.",
    "Roast the vegetables with olive oil and a little garlic.",
    "The software update fixed the crash on start-up.",
    "Rain is expected across the north by the evening.",
    "The orchestra played the second movement far too slowly.",
    "Keep the medicine out of the reach of children.",
    "The bank raised interest rates for the third time this year.",
    "The hikers reached the summit shortly after dawn.",
    "The police found a loaded pistol in the glove box.",
    "Serve the soup hot with a slice of fresh bread.",
    "The children built a snowman in the back garden.",
    "He practised the piano for an hour every morning.",
    "The cease-fire collapsed after a night of heavy shelling.",
]
TOPICS = ["violence and weapons", "medical advice", "cooking"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="embedding")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    assert len(SENTENCES) == 32

    t0 = time.perf_counter()
    scorer = load_scorer(args.spec, args.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.score(SENTENCES, TOPICS)
    cold_ms = (time.perf_counter() - t0) * 1e3
    warm = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scores = scorer.score(SENTENCES, TOPICS)  # (32, 3)
        warm.append((time.perf_counter() - t0) * 1e3)

    print(f"scorer cost, {date.today()}, {platform.machine()}, {torch.get_num_threads()} thread(s), "
          f"device {args.device}, scorer {scorer.name}")
    print(f"load: {load_s:.2f} s")
    print(f"score 32 sentences x 3 topics: first call {cold_ms:.1f} ms (topics embedded), "
          f"warm p50 {statistics.median(warm):.1f} ms, min {min(warm):.1f} ms, max {max(warm):.1f} ms "
          f"({statistics.median(warm) / 32:.2f} ms per sentence, {args.repeats} repeats)")
    top = scores.argmax(0).tolist()
    print("top sentence per topic: " + "; ".join(f"{t!r}: {SENTENCES[i]!r} ({scores[i, j]:.2f})"
                                                  for j, (t, i) in enumerate(zip(TOPICS, top))))


if __name__ == "__main__":
    main()
