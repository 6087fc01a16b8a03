import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from server.cli import app

runner = CliRunner()


def test_data_synth_writes_sites(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--sites",
            "site-a,site-b",
            "--per-site",
            "12",
            "--size",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site-a.npz").is_file() and (tmp_path / "site-b.npz").is_file()
    assert json.loads((tmp_path / "dataset.json").read_text())["size"] == 32


def test_data_synth_unknown_site_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--sites", "mars"])
    assert result.exit_code == 2
    assert "unknown site 'mars'" in result.output


def test_distill_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {name: resnet-student}\nlos: {}\n")
    result = runner.invoke(app, ["distill", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'los'" in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a crash


def test_distill_missing_teacher_is_explained(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"teacher: {tmp_path}/none.json\ndata: {{dir: {tiny_data}}}\nout: {tmp_path}/o\n"
    )
    result = runner.invoke(app, ["distill", str(cfg)])
    assert result.exit_code == 2
    assert "none.json not found" in result.output and "fovea teacher train" in result.output


def test_teacher_train_rejects_bad_options(tmp_path: Path) -> None:
    result = runner.invoke(app, ["teacher", "train", "--lr", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--lr" in result.output
    result = runner.invoke(
        app, ["teacher", "train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "t")]
    )
    assert result.exit_code == 2 and "fovea data synth" in result.output
    assert isinstance(result.exception, SystemExit)


def test_distill_missing_and_broken_data_are_explained(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"teacher: {tmp_path}/none.json\ndata: {{dir: {tmp_path}}}\nout: {tmp_path}/o\n")
    (tmp_path / "site-a.npz").write_bytes(b"")
    result = runner.invoke(app, ["distill", str(cfg)])
    assert result.exit_code == 2
    assert "site-a.npz: not a readable Fovea dataset file" in result.output
    assert isinstance(result.exception, SystemExit)
    (tmp_path / "site-a.npz").unlink()
    result = runner.invoke(app, ["distill", str(cfg)])
    assert result.exit_code == 2 and "fovea data synth" in result.output


def test_console_scripts_are_installed() -> None:
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "fovea"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "distill" in out.stdout
    out = subprocess.run([str(bin_dir / "fovea-agent"), "version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("fovea-agent ")
