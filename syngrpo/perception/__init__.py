"""What a perception task is made of: the ``Task`` contract (:mod:`.task`), the response format and its parser
(:mod:`.response`), reward functions (:mod:`.rewards`), and the kit task plugins build on: boxes and image
transforms (:mod:`.geometry`), tolerant answer readers (:mod:`.answers`), detection metrics and COCO AP
(:mod:`.detection`, :mod:`.coco_group`), VLM-R1's scoring profile (:mod:`.vlmr1`) and toy images with exact labels
(:mod:`.toyshapes`).
"""
