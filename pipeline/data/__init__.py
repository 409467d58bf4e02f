"""The data: IDX files, the sources fetch reads, the split, normalization, the prepared
format."""
