"""The engine: an aiohttp service answering word and image queries over the active model bundle."""
