"""Inputs and their formats: photos and videos decoded, input sources, labelled data sets, the class
hierarchy, folds, crops, clips (a video or a frame folder is one sample) and content hashes."""
