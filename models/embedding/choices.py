"""The embedding domain's named choices, importable without torch or gensim: a command's parser offers them before
any model loads (``--help`` answers without importing either)."""

BACKBONES = ("resnet18", "resnet50", "googlenet", "resnet-tiny")
LOSSES = ("cosine", "sigmoid-ce", "infonce")
TARGET_KINDS = ("word2vec", "lda")  # how captions become training targets
