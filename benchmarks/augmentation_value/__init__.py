"""Does style augmentation help? ``python -m benchmarks.augmentation_value`` measures it (the first experiment).

- ``cue_conflict``: the generated data (shape = class, texture = a training shortcut, three test sets);
- ``datasets``: that data or the user's ImageFolders, as the augment job's input and the arms' originals;
- ``augment_job``: runs the real ``pipelines.augment`` job and reads its Parquet back, checked;
- ``classifier``: the one small CNN, its training loop, classic augmentation, accuracy and shape bias;
- ``experiment``: arms × seeds; ``report``: JSON, markdown table, bar chart; ``__main__``: the CLI.
"""
