"""Train resnet18 on an ``--output-format imagefolder`` output: ``OUT/data/<label>/<id>.jpg``.

python examples/train_imagefolder.py OUT --max-steps 50
"""

from one_epoch import classes_of, image_transform, parse_args, train_one_epoch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def main():
    args = parse_args(__doc__)
    data = ImageFolder(args.output / "data", transform=image_transform(args.image_size))
    assert data.classes == classes_of(args.output)  # folder order is the job's class order: indices agree
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    train_one_epoch(loader, len(data.classes), args.max_steps)


if __name__ == "__main__":
    main()
