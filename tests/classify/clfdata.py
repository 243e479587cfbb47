"""Small generated labelled data for the classifier tests."""
import csv
import random

POS = "good great fine excellent lovely superb".split()
NEG = "bad awful poor terrible boring dull".split()
FILL = "the a movie film plot actor story it was and".split()


def write_reviews(path, n=240, seed=0, regression=False):
    """A CSV of short texts: each holds one sentiment word among filler; ``regression``: the
    label is a number (the fraction of positive words, 0.0-1.0)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(n):
            words = [rng.choice(FILL) for _ in range(rng.randint(3, 12))]
            k = rng.randint(0, 3)
            for j in range(3):
                words.insert(rng.randrange(len(words) + 1), rng.choice(POS if j < k else NEG))
            label = f"{k / 3:.3f}" if regression else ("pos" if k >= 2 else "neg")
            w.writerow([" ".join(words), label])
    return path


TINY = ["--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
        "--set", "model.head_size=8", "--set", "train.batch_size=16", "--set", "train.lr=0.01",
        "--no-progress"]

