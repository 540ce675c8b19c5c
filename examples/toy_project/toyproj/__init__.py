"""A small outside project trained with lazytrain: Gaussian blobs classified by an MLP."""
