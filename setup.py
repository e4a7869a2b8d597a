"""pretrain: JAX/Flax pretraining of Transformer language models (GPT decoders, BERT encoders)."""

import setuptools

setuptools.setup(
  name="pretrain",
  version="0.2.0",
  description="JAX/Flax research codebase for pretraining Transformer language models.",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=setuptools.find_packages(
    include=["pretrain*", "models*", "input_pipeline*", "configs*", "launch*"]
  ),
  install_requires=[
    "jax>=0.10.0,<0.11",
    "flax>=0.12.0,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.12.0,<0.13",
    "tensorflow-datasets>=4.9.8,<5",
    # tfds prepares datasets with TensorFlow; the CPU build never claims an accelerator.
    "tensorflow-cpu>=2.18,<3",
    "array-record>=0.7",
    "importlib_resources",  # imported by tfds when preparing, not declared by it
    "ml-collections>=1.0,<2",
    "absl-py>=2.1,<3",
    "tokenizers>=0.20,<1",
    "tensorboardX>=2.6,<3",
    "numpy>=1.26",
  ],
  extras_require={
    # Hugging Face checkpoints (pretrain/convert.py); torch only to read pytorch_model.bin
    "hf": ["safetensors>=0.4"],
    # record shards in config.data.files: Parquet and Arrow (pyarrow), .jsonl.zst (zstandard)
    "corpora": ["pyarrow>=14", "zstandard>=0.22"],
    # lm-evaluation-harness over our checkpoints (pretrain/lm_eval.py)
    "eval": ["lm-eval>=0.4.5,<0.5"],
    # hyperparameter sweeps (launch/sweep.py): the Optuna study, the report's plot
    "sweep": ["optuna>=4.5,<6", "matplotlib>=3.8"],
    # workdirs, init_from and data_dir on gs:// (pretrain/ground/storage.py): gcsfs for files,
    # google-cloud-storage for TensorBoard's event files (TensorStore needs nothing more)
    "gcs": ["gcsfs>=2024.2", "google-cloud-storage>=2.14"],
    # TensorBoard's viewer for a run's tensorboard/ (runs write events with tensorboardX)
    "tensorboard": ["tensorboard>=2.15"],
    # optional logging to Weights & Biases (config.wandb)
    "wandb": ["wandb>=0.19"],
    # everything the tests need: CPU torch and transformers for the parity tests, the
    # reference implementations the fine-tuning metrics are checked against, lm-eval, the
    # sweep's Optuna and matplotlib, TensorBoard's reader (HParams), wandb (offline) and
    # hypothesis (config fuzzing), gcsfs and a local GCS emulator (gs:// runs), and ruff and
    # mypy at the versions CI lints, formats and type-checks with
    "test": [
      "pytest>=8",
      "pytest-xdist>=3.5",
      "safetensors>=0.4",
      "transformers>=5,<6",
      "torch==2.13.0",
      "seqeval>=1.2.2",
      "scikit-learn>=1.3",
      "scipy>=1.10",
      "lm-eval>=0.4.5,<0.5",
      "optuna>=4.5,<6",
      "matplotlib>=3.8",
      "tensorboard>=2.15",
      "wandb>=0.19",
      "hypothesis>=6.100",
      "gcsfs>=2024.2",
      "google-cloud-storage>=2.14",
      "gcp-storage-emulator>=2024.8",
      "pyarrow>=14",
      "zstandard>=0.22",
      "ruff==0.14.14",
      "mypy==1.19.1",
    ],
    "cuda": ["jax[cuda12]>=0.10.0,<0.11"],
    "tpu": ["jax[tpu]>=0.10.0,<0.11", "gcsfs>=2024.2", "google-cloud-storage>=2.14"],
  },
)
