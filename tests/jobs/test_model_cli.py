"""`twin model check|draft` and the check that a run could read its input."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.cli import main
from jobs.inputcheck import check, sniff

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "compressor"


def test_check_shows_what_the_twin_will_understand(capsys):
    assert main(["model", "check", str(EXAMPLE / "compressor.model.yaml"),
                 str(EXAMPLE / "compressor.format.yaml")]) == 0
    out = capsys.readouterr().out
    assert "model plant-a@1" in out and "asset type compressor" in out
    assert "vib                  condition        millimeter / second in [0, 50]" in out
    assert "assets comp-* -> compressor (site plant-a, line compressed-air)" in out
    assert "format compressor-json@1" in out and "topics plant.comp7" in out
    assert out.rstrip().endswith("ok")


def test_check_names_the_file_line_and_field_of_a_problem(tmp_path, capsys):
    bad = tmp_path / "m.yaml"
    bad.write_text((EXAMPLE / "compressor.model.yaml").read_text()
                   .replace("role: condition}", "role: health}", 1))
    assert main(["model", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:10: asset_types.compressor.sensors.t_c.role: 'health' is not one of" in err


def test_draft_from_samples_loads_as_it_is_and_reads_them(tmp_path, capsys):
    assert main(["model", "draft", str(EXAMPLE / "sample.jsonl"), "--topic", "plant.comp7",
                 "--name", "compressor", "--out", str(tmp_path)]) == 0
    model, fmt = tmp_path / "compressor.model.yaml", tmp_path / "compressor.format.yaml"
    assert "# guessed" in model.read_text() and "role: condition" in model.read_text()
    assert main(["model", "check", str(model), str(fmt)]) == 0
    from transforms.normalize import generic, normalize_message
    from transforms.plant import load_plant

    plant = load_plant([model], [fmt])
    plant.install()
    adapter = generic.adapter_for_topic("plant.comp7")
    line = (EXAMPLE / "sample.jsonl").read_text().splitlines()[0].encode()
    r = normalize_message(line, now_ms=1_796_119_200_000, decode=adapter.decode)
    assert r["values"]["vib"] == 2.3 and r["asset_type"] == "compressor"


def test_draft_reads_a_csv_header_and_says_when_it_cannot_guess(tmp_path, capsys):
    sample = tmp_path / "pumps.csv"
    sample.write_text("machine,timestamp,flow_m3h,bearing_temp_c,vib_mm_s\n"
                      "p1,1764583200,120.5,61.0,1.9\np1,1764583260,121.0,61.2,1.8\n")
    assert main(["model", "draft", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "encoding: csv" in out and "format: epoch_s" in out
    assert "bearing_temp_c: {unit: degC" in out and "flow_m3h: {unit: meter ** 3 / hour" in out
    sample.write_text("a,b\n1,2\n")
    assert main(["model", "draft", str(sample)]) == 2
    assert "cannot tell the asset field" in capsys.readouterr().err


def test_a_source_of_dead_letters_only_is_named_with_a_hint(tmp_path):
    n = 50
    pq.write_table(pa.table({
        "source": [f"plant.comp9/0@{i}" for i in range(n)] + ["twin.raw.helios/1@4"],
        "reason": ["bad_magic"] * n + ["out_of_range"],
        "payload": [b'{"device": "comp-9", "ts": 1}'] * n + [b"\x00\x00\x00\x00\x01x"]}),
        tmp_path / "dead_letters.parquet")
    summary = {"dead_letters": n + 1, "offsets_from": {"plant.comp9/0": 0,
                                                       "twin.raw.helios/1": 0},
               "offsets_to": {"plant.comp9/0": n, "twin.raw.helios/1": 5000}}
    [u] = check(tmp_path, summary)
    assert u.source == "plant.comp9" and (u.messages, u.dead) == (50, 50)
    assert "bad_magic 50" in u.describe() and "declare a json format" in u.describe()
    assert check(tmp_path, summary, max_dead_share=1.01) == []
    assert sniff(b"\x00\x00\x00\x01\x02abc") == "Confluent-framed Avro"
