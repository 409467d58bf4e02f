"""The data: IDX files, the sources fetch reads, the split, normalization and the prepared format."""
