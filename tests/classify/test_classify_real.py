"""The Pang & Lee scale data as a user would feed it (a TSV made with paste): read, inferred to
be a regression, split, trained a few steps, scored. Runs when the data is present."""
from rnndrop import checkpoint as ckpt
from rnndrop.cli import main

CRITIC = "Dennis+Schwartz"


def test_scaledata_tsv_trains_a_regressor(tmp_path, capsys, real_data):
    base = real_data(f"scaledata/scaledata/{CRITIC}") / "scaledata" / "scaledata" / CRITIC
    ratings = (base / f"rating.{CRITIC}").read_text().split()
    texts = (base / f"subj.{CRITIC}").read_text(encoding="utf-8").splitlines()
    assert len(ratings) == len(texts) == 1027
    tsv = tmp_path / "ratings.tsv"
    tsv.write_text("label\ttext\n" + "".join(f"{r}\t{t}\n" for r, t in zip(ratings, texts)))
    out = tmp_path / "run"
    assert main(["classify", "train", "--data", str(tsv), "--out", str(out),
                 "--set", "train.max_steps=3", "--set", "train.epochs=1",
                 "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
                 "--set", "data.max_len=50", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "task: regression" in printed and "827 train, 100 valid, 100 test" in printed
    state = ckpt.load(out / "last.pt")
    mean, std = state["target_scale"]
    assert 0.4 < mean < 0.8 and 0.1 < std < 0.3        # ratings in [0, 1]
    assert main(["classify", "train", "--resume", str(out / "last.pt"), "--set",
                 "train.max_steps=0", "--no-progress"]) == 0
    assert "rmse" in capsys.readouterr().out
