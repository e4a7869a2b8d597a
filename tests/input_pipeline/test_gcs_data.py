"""A gs:// data_dir / tokenized_dir (input_pipeline/corpora/mirror.py), against a local GCS emulator:
prepared once through a local mirror and uploaded, found by the next run on an empty cache;
half-uploaded directories are not taken; a missing bucket fails first, in one line."""

import os
import subprocess
import sys

import fsspec
import numpy as np
import pytest

from input_pipeline import tokenizer
from input_pipeline.corpora import mirror, tokenized
from pretrain.ground import errors
from pretrain.objectives import registry
from pretrain.training import data
from tests import helpers
from tests.helpers import REPO, tiny_bert_config, tiny_gpt_config, write_sentence_corpus


def _corpus(tmp_path, n=40):
  folder = tmp_path / "corpus"
  folder.mkdir(exist_ok=True)
  for i in range(n):
    (folder / f"{i:03d}.txt").write_text(
      f"Document {i} begins here. The cat sat on mat number {i * 7}.\n" + "More words. " * i
    )
  return str(folder / "*.txt")


def _listing(url):
  """The files under `url`, relative to it."""
  fs, root = fsspec.core.url_to_fs(url)
  fs.invalidate_cache()
  return sorted(p[len(root) + 1 :] for p in fs.find(root))


def _gpt(data_dir, corpus, cache, **overrides):
  return tiny_gpt_config(
    data_dir, **{"data.files": corpus, "data.cache_dir": str(cache), **overrides}
  )


def _spy(monkeypatch, module, name):
  """Counts the calls of a real function."""
  calls, real = [], getattr(module, name)
  monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(1) or real(*a, **kw))
  return calls


def test_a_gs_data_dir_is_prepared_once_and_found_by_the_next_host(
  gcs, tmp_path, capsys, monkeypatch
):
  url, corpus = gcs("data"), _corpus(tmp_path)
  trained = _spy(monkeypatch, tokenizer, "_train_bpe")
  causal_lm = registry.get("causal_lm")
  _, train, val, _ = data.load_data(_gpt(url, corpus, tmp_path / "cache1"), causal_lm)
  out = capsys.readouterr().out
  assert "tokenized local_text/" in out and trained == [1]
  files = _listing(url)
  assert not [f for f in files if f.startswith("local_text/")]  # tokenized from the files: no copy
  assert [f for f in files if f.startswith("tokenizers/")] == [
    f"tokenizers/{f}"
    for f in sorted(os.listdir(tmp_path / "cache1" / "gs" / url[5:] / "tokenizers"))
  ]
  manifests = [f for f in files if f.startswith("tokenized/") and f.endswith("/manifest.json")]
  assert len(manifests) == 2  # train and validation
  assert not [f for f in files if f.startswith("downloads") or "/." in f or f.startswith(".")]
  # Another host: an empty cache; nothing is prepared, trained or tokenized again.
  _, train2, val2, _ = data.load_data(_gpt(url, corpus, tmp_path / "cache2"), causal_lm)
  out = capsys.readouterr().out
  assert "prepared" not in out and "tokenized" not in out and trained == [1], out
  for step in range(3):
    np.testing.assert_array_equal(train.batch(step)["inputs"], train2.batch(step)["inputs"])
  np.testing.assert_array_equal(val[""].eval_batch(0)["inputs"], val2[""].eval_batch(0)["inputs"])
  assert _listing(url) == files  # nothing new in the bucket


def test_a_gs_tokenized_dir_through_the_prepare_command(gcs, tmp_path, monkeypatch):
  url, corpus = gcs("tokenized"), _corpus(tmp_path)
  local = tmp_path / "tfds"
  proc = helpers.run_python(
    [
      sys.executable,
      "-m",
      "input_pipeline.prepare",
      "--config=configs/gpt.py:smoke",
      f"--config.data.data_dir={local}",
      f"--config.data.tokenized_dir={url}",
      f"--config.data.files={corpus}",
      f"--config.data.cache_dir={tmp_path / 'cache1'}",
      "--config.data.tokenizer.vocab_size=256",
    ],
    dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"-> {url}/train.documents" in proc.stdout, proc.stdout
  assert {"train.documents/manifest.json", "validation.documents/manifest.json"} <= set(
    _listing(url)
  )
  assert not (local / "tokenized").exists()  # the tokens went to the bucket (and the mirror)
  pieces = _spy(monkeypatch, tokenized, "_prepare_piece")
  config = _gpt(str(local), corpus, tmp_path / "cache2", **{"data.tokenized_dir": url})
  _, train, _, notes = data.load_data(config, registry.get("causal_lm"))
  assert not pieces and train.num_examples > 0
  assert os.path.isfile(
    tmp_path / "cache2" / "gs" / url[5:] / "train.documents" / "manifest.json"
  ), notes


def test_bert_examples_travel_with_the_splits(gcs, tmp_path):
  url = gcs("bert")
  corpus = write_sentence_corpus(tmp_path / "sentences.txt", docs=60)
  config = tiny_bert_config(url, corpus, **{"data.cache_dir": str(tmp_path / "cache1")})
  data.load_data(config, registry.get(config.objective))
  examples = [f for f in _listing(url) if "/examples-" in f]
  assert any(f.endswith("piece-00000.json") for f in examples)
  assert any(f.endswith("piece-00000.tokens.npy") for f in examples)


def test_a_fine_tuning_task_caches_its_rows_in_the_bucket(gcs, tmp_path, monkeypatch):
  from configs.finetune import glue

  url = gcs("glue")
  for name, n in (("train", 30), ("dev", 10)):
    (tmp_path / f"{name}.tsv").write_text(
      "sentence\tlabel\n"
      + "".join(f"the old boat {i} sees red apples\t{i % 2}\n" for i in range(n))
    )
  config = glue.get_config("sst2,size=smoke")
  config.data.update(
    data_dir=url,
    files=f"{tmp_path}/train.tsv,{tmp_path}/dev.tsv",
    cache_dir=str(tmp_path / "cache1"),
  )
  config.data.tokenizer.vocab_size = 60
  config.batch.update(size=8, seq_len=16)
  objective = registry.get(config.objective)
  _, train, _, _ = data.load_data(config, objective)
  assert len([f for f in _listing(url) if f.startswith("finetune/")]) == 2
  written = _spy(monkeypatch, tokenized, "write_atomic")  # how the rows' cache is written
  trained = _spy(monkeypatch, tokenizer, "_train_wordpiece")
  config.data.cache_dir = str(tmp_path / "cache2")  # another host
  _, again, _, _ = data.load_data(config, objective)
  assert not written and not trained
  np.testing.assert_array_equal(train.arrays["inputs"], again.arrays["inputs"])


def test_a_missing_bucket_fails_first_in_one_line(gcs, tmp_path, monkeypatch):
  del gcs  # the emulator, which does not hold this bucket
  monkeypatch.chdir(tmp_path)
  config = _gpt("gs://no-such-bucket/data", _corpus(tmp_path), tmp_path / "cache")
  with pytest.raises(errors.UserError) as e:
    data.load_data(config, registry.get("causal_lm"))
  message = str(e.value)
  assert "\n" not in message and message.startswith("config.data.data_dir: bucket gs://no-such-")
  assert "does not exist" in message and "gcloud storage buckets create" in message
  assert sorted(os.listdir(tmp_path)) == ["corpus"]  # no cache, no stray local "gs:" directory
  config = _gpt(
    str(tmp_path / "tfds"),
    _corpus(tmp_path),
    tmp_path / "cache",
    **{"data.tokenized_dir": "gs://no-such-bucket/tok"},
  )
  with pytest.raises(errors.UserError, match=r"^config\.data\.tokenized_dir: bucket"):
    data.load_data(config, registry.get("causal_lm"))
  assert sorted(os.listdir(tmp_path)) == ["corpus"]


def test_half_uploaded_directories_are_not_pulled(gcs, tmp_path):
  """A tfds directory without its dataset_info.json and a piece without its .json (an upload
  cut short) stay behind; lock and temporary files are never pushed."""
  url, local = gcs("partial"), tmp_path / "up"
  for name in (
    "ds/1.0.0/shard-0",
    "ds/1.0.0/features.json",
    "ds/1.0.0/.prepare.lock",
    "split/piece-00000-of-00002.tokens.bin",
    "split/piece-00000-of-00002.json",
    "split/piece-00001-of-00002.tokens.bin",
    "split/.tmp-1-x",
    "x.tmp",
  ):
    (local / name).parent.mkdir(parents=True, exist_ok=True)
    (local / name).write_text(name)
  mirror.push_dir(str(local), url)
  assert ".prepare.lock" not in str(_listing(url)) and "tmp" not in str(_listing(url))
  down = tmp_path / "down"
  mirror.pull(f"{url}/ds", str(down / "ds"), marker="dataset_info.json")
  mirror.pull(f"{url}/split", str(down / "split"))
  assert not (down / "ds").exists()
  assert sorted(os.listdir(down / "split")) == [
    "piece-00000-of-00002.json",
    "piece-00000-of-00002.tokens.bin",
  ]
  (local / "ds/1.0.0/dataset_info.json").write_text("{}")
  mirror.push_dir(str(local), url)
  mirror.pull(f"{url}/ds", str(down / "ds"), marker="dataset_info.json")
  assert sorted(os.listdir(down / "ds/1.0.0")) == ["dataset_info.json", "features.json", "shard-0"]


_PROCESS = """
import sys
from pretrain.devices import distributed
distributed.initialize()
import jax
import numpy as np
from pretrain.objectives import registry
from pretrain.training import data
from tests.helpers import tiny_gpt_config
config = tiny_gpt_config(sys.argv[1], **{"data.files": sys.argv[2], "data.prepare_pieces": 2})
_, train, _, _ = data.load_data(config, registry.get("causal_lm"))
np.save(sys.argv[3], np.stack([train.batch(s)["inputs"] for s in range(3)]))
print("processes:", jax.process_count())
"""


@pytest.mark.slow
def test_two_hosts_share_a_gs_data_dir(gcs, tmp_path):
  """Two processes with a cache each (two hosts' disks): each tokenizes its piece and uploads
  it, process 0 writes the manifest; both read the batches one process reads."""
  from launch import local

  url, corpus = gcs("hosts"), _corpus(tmp_path)
  envs = local.process_envs(2, local.free_port(), devices_per_process=4)
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", _PROCESS, url, corpus, str(tmp_path / f"batches{i}.npy")],
      cwd=REPO,
      env=dict(os.environ, **env, PRETRAIN_CACHE_DIR=str(tmp_path / f"host{i}")),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i, env in enumerate(envs)
  ]
  outs = [p.communicate(timeout=180)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
  assert all("processes: 2" in o for o in outs)
  assert "tokenized" in outs[0] and "piece 1/2" in outs[0] and "piece 2/2" not in outs[0]
  split = [f for f in _listing(url) if "/train.documents/" in f]
  assert sum(f.endswith(".tokens.bin") for f in split) == 2 and any(
    f.endswith("manifest.json") for f in split
  )
  for i in (0, 1):  # each host holds both pieces: its own and the other's, downloaded
    assert len(list((tmp_path / f"host{i}").rglob("train.documents/piece-*.tokens.bin"))) == 2
  one = _gpt(url, corpus, tmp_path / "host2", **{"data.prepare_pieces": 2})
  _, train, _, _ = data.load_data(one, registry.get("causal_lm"))
  expected = np.stack([train.batch(s)["inputs"] for s in range(3)])
  for i in (0, 1):
    np.testing.assert_array_equal(np.load(tmp_path / f"batches{i}.npy"), expected)


def test_entry_points_without_a_mirror_refuse_a_url(tmp_path):
  """sources.builders reads local directories only; the entry points hand it the mirror."""
  from input_pipeline.corpora import sources

  config = _gpt("gs://bucket/data", _corpus(tmp_path), tmp_path / "cache")
  with pytest.raises(sources.DataError, match=r"^config\.data\.data_dir: 'gs://bucket/data' is a"):
    sources.builders(config.data)
  assert not os.path.exists("gs:")  # nothing made of the URL as a local path
