"""The workflow SDK: builds graphs at definition time, in the manner of Medusa's Workflows SDK."""
