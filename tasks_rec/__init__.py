"""REC task plugin: referring expression comprehension (VLM-R1 formats, IoU reward, Acc@0.5)."""
