"""Building blocks that the registries' builders return: data sources, models, augmentation, distances."""
