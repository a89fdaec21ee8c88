"""The joint recipe: frozen GoogLeNet features, images and words learned into one space, hashtags."""
