import pytest

from config import ConfigError, RayfeedConfig, load_config


def test_defaults_load():
    config = load_config()
    assert isinstance(config, RayfeedConfig)
    assert 0 <= config.reranking.mmr_lambda <= 1


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "rayfeed.yaml"
    path.write_text("reranking:\n  mmr_lambda: 0.3\n  output_size: 40\n")
    config = load_config(path, overrides={"reranking": {"output_size": 20}})
    assert config.reranking.mmr_lambda == 0.3 and config.reranking.output_size == 20


def test_unknown_keys_are_rejected_with_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("reranking:\n  mmr_lamda: 0.3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "bad.yaml" in str(err.value) and "reranking.mmr_lamda" in str(err.value)


def test_out_of_bounds_values_are_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("reranking:\n  mmr_lambda: 3\n")
    with pytest.raises(ConfigError, match="reranking.mmr_lambda"):
        load_config(path)


def test_environment_overrides_apply_beneath_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFEED_RERANKING__OUTPUT_SIZE", "33")
    assert load_config().reranking.output_size == 33
    path = tmp_path / "c.yaml"
    path.write_text("reranking:\n  output_size: 44\n")
    assert load_config(path).reranking.output_size == 44


def test_non_mapping_file_is_an_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_a_node_environment_sets_the_artifact_cache_beneath_the_deployed_config(monkeypatch, tmp_path):
    """Each node's replicas inherit its environment: the cache directory is per node while the
    user_config (one for the whole cluster) names the root."""
    from config import config_from_mapping

    monkeypatch.setenv("RAYFEED_ARTIFACTS__CACHE_DIR", str(tmp_path / "node-a"))
    config = config_from_mapping({"artifacts": {"root": "s3://models/rayfeed", "version": None}})
    assert config.artifacts.root == "s3://models/rayfeed"
    assert config.artifacts.cache_dir == tmp_path / "node-a"
