"""The settings object: defaults, the YAML file, flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_config_default_yaml_equals_the_code_defaults() -> None:
    assert load_settings(ROOT / "config" / "default.yaml") == Settings()


def test_config_default_yaml_lists_every_setting() -> None:
    import yaml

    def keys(value: object, prefix: str = "") -> set[str]:
        if isinstance(value, dict) and value:  # an empty mapping (`recipes: {}`) is a setting of its own
            return {k for key, item in value.items() for k in keys(item, f"{prefix}{key}.")}
        return {prefix.rstrip(".")}

    listed = keys(yaml.safe_load((ROOT / "config" / "default.yaml").read_text()))
    import dataclasses

    def fields(obj: object, prefix: str = "") -> set[str]:
        if dataclasses.is_dataclass(obj):
            return {k for f in dataclasses.fields(obj) for k in fields(getattr(obj, f.name), f"{prefix}{f.name}.")}
        return {prefix.rstrip(".")}

    assert listed == fields(Settings())


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_file_values_override_defaults_and_flags_override_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  name: hf:/x\n  device: cpu\nwatch:\n  settle_seconds: 2\n")
    settings = load_settings(path, overrides={"model.device": "cuda", "model.name": None})
    assert settings.model.name == "hf:/x" and settings.model.device == "cuda"
    assert settings.watch.settle_seconds == 2.0 and isinstance(settings.watch.settle_seconds, float)


def test_paths_expand_the_home_folder(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "folders:\n  input: ~/Hot\n"))
    assert settings.folders.input == Path.home() / "Hot"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("watch:\n  setle_seconds: 1\n", "unknown setting 'watch.setle_seconds'"),
        ("colour: red\n", "unknown setting 'colour'"),
        ("watch:\n  settle_seconds: soon\n", "watch.settle_seconds: expected a number, got 'soon'"),
        ("watch:\n  polling: 1\n", "watch.polling: expected true or false"),
        ("queue:\n  max_attempts: 2.5\n", "queue.max_attempts: expected a whole number"),
        ("queue:\n  max_attempts: 0\n", "queue.max_attempts: must be greater than 0"),
        ("model:\n  device: gpu\n", "model.device: 'gpu' is not one of auto, mps, cuda, cpu"),
        ("originals: shred\n", "originals: 'shred' is not one of keep, archive, delete"),
        ("pipeline:\n  png_compression: 12\n", "pipeline.png_compression: must be between 0 and 9"),
        ("pipeline:\n  imagenet_mean: [1, 2]\n", "pipeline.imagenet_mean: expected a list of 3 numbers"),
        ("watch:\n  settle_seconds: .nan\n", "watch.settle_seconds: expected a finite number, got nan"),
        ("queue:\n  retry_max_seconds: .inf\n", "queue.retry_max_seconds: expected a finite number, got inf"),
        ("pipeline:\n  alpha_threshold: -.inf\n", "pipeline.alpha_threshold: expected a finite number, got -inf"),
        ("pipeline:\n  imagenet_mean: [0.4, .NaN, 0.4]\n", "pipeline.imagenet_mean: expected a finite number, got nan"),
        ("pipeline:\n  canny_low: 200\n  canny_high: 100\n", "pipeline.canny_low: 200 is greater than pipeline.canny_high (100)"),
        ("watch: 5\n", "watch: expected a mapping"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_an_invalid_config_names_the_key_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text))
    assert message in str(caught.value)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


def test_the_configuration_reference_lists_every_setting_with_its_default() -> None:
    import dataclasses

    page = (ROOT / "docs" / "configuration.md").read_text()
    reference = page[page.index("## Configuration reference") :]

    def rows(obj: object, prefix: str = "") -> list[tuple[str, object]]:
        if dataclasses.is_dataclass(obj):
            return [r for f in dataclasses.fields(obj) for r in rows(getattr(obj, f.name), f"{prefix}{f.name}.")]
        return [(prefix.rstrip("."), obj)]

    for key, default in rows(Settings()):
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else None
        assert f"| `{key}` |" in reference, key
        if shown is not None:
            assert f"| `{key}` | `{shown}` |" in reference, key


def test_the_readme_starts_with_the_run_and_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    first_blocks = readme.split("```bash\n")[1:3]
    assert "cutout watch --input" in first_blocks[0]
    lock = "-c tests/constraints.txt"
    assert f"pip install {lock} torch==2.13.0" in first_blocks[1] and "python -m pytest" in first_blocks[1]
    assert f"pip install {lock} -e '.[test]'" in first_blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci and "tests/constraints.txt" in ci


def test_the_test_lock_pins_every_package_exactly() -> None:
    """A constraints file of `name==version` lines only: nothing left to float."""
    lines = [line for line in (ROOT / "tests" / "constraints.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(line.count("==") == 1 and "+" not in line for line in lines), lines
    names = {line.split("==")[0].lower().replace("_", "-") for line in lines}
    assert {"torch", "transformers", "mypy", "pytest", "numpy", "pip"} <= names


# --- relative paths: from where they were written -------------------------------------------------
def test_relative_paths_in_a_config_file_are_taken_from_its_folder_not_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A launchd agent does not start in the folder the user wrote the config in.
    studio, elsewhere = tmp_path / "studio", tmp_path / "elsewhere"
    (studio / "models").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = (
        "folders:\n  input: hot\n  output: ../cutouts\n  quarantine: q\n  archive: a\n  state: .state\n"
        "logging:\n  file: logs/cutout.log\nmodel:\n  name: models/tiny.torchscript\n"
    )
    settings = load_settings(_write(studio, text))
    folders = settings.folders
    assert (folders.input, folders.output) == (studio / "hot", studio / "../cutouts")
    assert (folders.quarantine, folders.archive, folders.state) == (studio / "q", studio / "a", studio / ".state")
    assert settings.logging.file == studio / "logs" / "cutout.log"
    assert settings.model.name == str(studio / "models" / "tiny.torchscript")


def test_a_config_given_by_a_relative_path_anchors_its_paths_at_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "studio").mkdir()
    _write(tmp_path / "studio", "folders:\n  input: hot\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(Path("studio/config.yaml")).folders.input == tmp_path / "studio" / "hot"


def test_a_local_hf_folder_is_anchored_and_a_hub_repository_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    studio = tmp_path / "studio"
    (studio / "models" / "birefnet").mkdir(parents=True)
    local = load_settings(_write(studio, "model:\n  name: hf:models/birefnet\n")).model.name
    spelled = load_settings(_write(studio, "model:\n  name: hf:./not-yet-there\n")).model.name
    hub = load_settings(_write(studio, "model:\n  name: hf:ZhengPeng7/BiRefNet\n")).model.name
    alias = load_settings(_write(studio, "model:\n  name: birefnet\n")).model.name
    assert local == f"hf:{studio / 'models' / 'birefnet'}"
    assert spelled == f"hf:{studio / 'not-yet-there'}"
    assert (hub, alias) == ("hf:ZhengPeng7/BiRefNet", "birefnet")


def test_relative_paths_on_the_command_line_are_taken_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studio, shell = tmp_path / "studio", tmp_path / "shell"
    studio.mkdir()
    shell.mkdir()
    monkeypatch.chdir(shell)
    config = _write(studio, "folders:\n  input: hot\n")
    settings = load_settings(
        config, overrides={"folders.output": Path("out"), "logging.file": Path("x.log"), "model.name": "m.pt"}
    )
    assert settings.folders.input == studio / "hot"
    assert (settings.folders.output, settings.logging.file) == (shell / "out", shell / "x.log")
    assert settings.model.name == str(shell / "m.pt")


def test_paths_of_the_wrong_type_are_still_reported_with_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folders.input: expected a path, got 5"):
        load_settings(_write(tmp_path, "folders:\n  input: 5\n"))



@pytest.mark.parametrize(("url", "words"), [
    (None, "needs the database"),
    ("mysql://db/x", "expected postgresql://"),
    ("postgresql://cutout:secret@db.studio/cutout", "holds a password"),
    ("postgresql://cutout@db.studio/cutout?password=secret", "holds a password"),
])
def test_a_postgresql_store_needs_a_url_without_a_password(url: str | None, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(overrides={"queue.store": "postgresql", "queue.url": url})


def _bounded_fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, Bounds) the settings' types declare."""
    import dataclasses
    import typing

    from daemon.pipeline.constants import Bounds

    found = []
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if dataclasses.is_dataclass(hint):
            found += _bounded_fields(typing.cast(type, hint), f"{prefix}{name}.")
        found += [(f"{prefix}{name}", meta) for meta in getattr(hint, "__metadata__", ()) if isinstance(meta, Bounds)]
    return found


@pytest.mark.parametrize(("key", "bounds"), _bounded_fields(Settings), ids=lambda v: str(v))
def test_every_bounded_number_refuses_a_value_outside_its_range_and_names_its_key(key: str, bounds: Any) -> None:
    outside = bounds.high + 1 if bounds.high is not None else bounds.low - (0 if bounds.above else 1)
    with pytest.raises(ConfigError, match=rf"^{key}: must be .*, got {outside!r}(\.0)?$"):
        load_settings(overrides={key: outside})


def test_the_bounds_cover_the_numbers_that_must_be_positive() -> None:
    keys = {key for key, _ in _bounded_fields(Settings)}
    assert {"watch.settle_seconds", "queue.lease_seconds", "limits.max_pixels", "worker.in_flight",
            "pipeline.pad_color", "pipeline.png_compression", "logging.backups"} <= keys
