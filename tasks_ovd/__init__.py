"""OVD task plugin: open-vocabulary detection (VLM-R1 formats, eq. 3 reward, mAP/GP/GR)."""
