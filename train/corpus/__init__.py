"""The corpus side: readers (Flickr8k, instaloader, posts.jsonl), the topic, the filters and the split.

Stages in order: ``ingest`` (:mod:`.ingest`, :mod:`.instaloader`) → ``filter`` (:mod:`.filters`, with the
topic of :mod:`.topic`) → ``split`` (:mod:`.split`). :mod:`.posts` is the one record they all pass on;
:mod:`.fetch` and :mod:`.multilingual` make corpora to train on (Flickr8k, the multilingual demo).
"""
