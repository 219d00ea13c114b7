import numpy as np
import pandas as pd
import pytest
from PIL import Image

import retrievalkit as rk
from retrievalkit import cli
from retrievalkit.experiments import baseline, reproduce


def test_color_histogram_is_a_unit_hellinger_vector():
    img = Image.new("RGB", (8, 8), (255, 0, 0))
    h = rk.baselines.color_histogram(img)
    assert h.shape == (128,) and np.isclose(np.linalg.norm(h), 1.0) and np.count_nonzero(h) == 1


def test_unreadable_database_image_gets_a_zero_row_and_a_report(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), "blue").save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    desc, skipped = rk.baselines.describe_images([good, bad, good])
    assert desc.shape == (3, 128) and not desc[1].any() and desc[0].any()
    assert [p for p, _ in skipped] == [bad]


def test_baseline_beats_chance_on_coil100(coil_home):
    ds = rk.datasets.load("coil100", data_home=coil_home, objects=range(51, 61), download=False)
    df, ids = baseline.run(ds)
    assert set(df["protocol"]) == {"all", "easy", "hard"}
    chance = 71 / (ds.n_db - 1)
    all_map = df.set_index("protocol").loc["all", "mAP"]
    assert chance < 0.2 < all_map <= 1.0
    assert ids.shape == (ds.n_queries, ds.n_db)


def test_reproduce_writes_csv_figures_and_report(coil_home, tmp_path):
    written = reproduce.reproduce(
        ["baseline"], figures_dir=tmp_path / "fig", results_dir=tmp_path / "res", small=True, progress=False,
        data_home=coil_home,
    )
    names = {p.name for p in written}
    assert {"baseline.csv", "baseline_ranking.png", "REPORT.md"} <= names
    df = pd.read_csv(tmp_path / "res" / "baseline.csv")
    assert len(df) == 3 and df["queries"].eq(40).all()
    report = (tmp_path / "fig" / "REPORT.md").read_text()
    assert "| all" in report and "| aggregation | not run |" in report
    # the report is reassembled from the saved sections alone, without running anything
    (tmp_path / "fig" / "REPORT.md").unlink()
    reproduce.write_report(tmp_path / "fig", tmp_path / "res")
    assert (tmp_path / "fig" / "REPORT.md").read_text() == report


def test_reproduce_rejects_unknown_steps(tmp_path):
    with pytest.raises(ValueError, match="known steps: baseline"):
        reproduce.reproduce(["nope"], figures_dir=tmp_path, results_dir=tmp_path)


def test_cli_reports_missing_data_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RETRIEVALKIT_MIRROR", raising=False)
    code = cli.main(["--data-home", str(tmp_path), "evaluate", "--dataset", "coil100", "--no-download"])
    err = capsys.readouterr().err
    assert code == 1 and "retrievalkit datasets fetch coil100" in err and "Traceback" not in err


def test_cli_unknown_dataset_lists_names(capsys):
    assert cli.main(["evaluate", "--dataset", "nope"]) == 1
    assert "known datasets" in capsys.readouterr().err


def test_cli_datasets_list(capsys, coil_home):
    assert cli.main(["--data-home", str(coil_home), "datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "coil100" in out and "present" in out and "roxford5k" in out


def test_a_failing_step_keeps_the_others_and_says_so(coil_home, tmp_path, monkeypatch):
    def broken(run):
        raise RuntimeError("boom")

    monkeypatch.setitem(reproduce.STEPS, "broken", reproduce.Step("broken", (), broken, (), lambda run, t: ""))
    with pytest.raises(reproduce.StepsFailed, match="broken.*boom") as err:
        reproduce.reproduce(["baseline", "broken"], figures_dir=tmp_path / "f", results_dir=tmp_path / "r",
                            small=True, progress=False, data_home=coil_home)
    assert (tmp_path / "r" / "baseline.csv").is_file()
    assert "Step `broken` failed" in (tmp_path / "f" / "REPORT.md").read_text()
    assert err.value.failed == {"broken": "RuntimeError: boom"}


def test_cropped_queries_in_the_database_are_described_from_their_crop(tmp_path):
    # Oxford5k/Paris6k: each query is a database image cropped to its box, the box in the
    # stored frame (the image carries an EXIF rotation that must not apply first).
    from conftest import sideways_jpeg

    from retrievalkit.datasets.base import QueryGroundTruth, RetrievalDataset

    photo, other = sideways_jpeg(tmp_path / "photo.jpg"), tmp_path / "other.png"
    Image.new("RGB", (8, 8), "green").save(other)
    ds = RetrievalDataset(
        name="oxford-like", root=tmp_path, db_paths=[photo, other], query_paths=[photo],
        gnd=[QueryGroundTruth.make([0], bbox=(0, 0, 40, 8))], query_db_index=np.array([0]), exif_transpose=False,
    )
    db, queries, skipped = baseline.describe_dataset(ds)
    red = rk.baselines.color_histogram(Image.new("RGB", (40, 8), (255, 0, 0)))
    assert skipped == [] and not np.allclose(queries[0], db[0])
    assert float(queries[0] @ red) > 0.99
