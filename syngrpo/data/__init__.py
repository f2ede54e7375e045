"""Data as files and as the training pool: dataset record files and image paths (:mod:`.files`), Hugging Face
datasets (:mod:`.hf`), the data pool that synthesis keeps changing (:mod:`.pool`), image loading (:mod:`.images`).

Below the task contract: it reads records, and the tasks give them meaning.
"""
