"""Train resnet18 on a Parquet output (the default): ``OUT/data/augmented-*.parquet``, through Hugging Face
``datasets``, which reads the card ``OUT/README.md``: ``image`` decodes to PIL, ``label`` is the class index.

    python examples/train_parquet.py OUT --max-steps 50
"""

from datasets import load_dataset
from one_epoch import classes_of, image_transform, parse_args, train_one_epoch
from torch.utils.data import DataLoader


def main():
    args = parse_args(__doc__)
    to_tensor = image_transform(args.image_size)
    data = load_dataset(str(args.output), split="augmented").with_transform(
        lambda rows: {"image": [to_tensor(image.convert("RGB")) for image in rows["image"]], "label": rows["label"]}
    )
    assert data.features["label"].names == classes_of(args.output)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    batches = ((batch["image"], batch["label"]) for batch in loader)
    train_one_epoch(batches, len(classes_of(args.output)), args.max_steps)


if __name__ == "__main__":
    main()
