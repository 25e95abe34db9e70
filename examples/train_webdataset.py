"""Train resnet18 on an ``--output-format webdataset`` output: ``OUT/data/augmented-*.tar`` shards of
``KEY.jpg`` + ``KEY.cls`` (the class index) + ``KEY.json``.

    python examples/train_webdataset.py OUT --max-steps 50
"""

import webdataset as wds
from one_epoch import classes_of, image_transform, parse_args, train_one_epoch
from torch.utils.data import DataLoader


def main():
    args = parse_args(__doc__)
    shards = sorted(str(path) for path in (args.output / "data").glob("augmented-*.tar"))
    data = wds.WebDataset(shards, shardshuffle=len(shards)).shuffle(1000).decode("pil")
    data = data.to_tuple("jpg", "cls").map_tuple(image_transform(args.image_size), int)
    loader = DataLoader(data, batch_size=args.batch_size)
    train_one_epoch(loader, len(classes_of(args.output)), args.max_steps)


if __name__ == "__main__":
    main()
