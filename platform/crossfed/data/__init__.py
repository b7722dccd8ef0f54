"""The experiment data layer: ROOT files of any experiment in, common event tensors out."""
