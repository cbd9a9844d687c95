"""VGG16's convolution layers by their Keras names: torch-free, so config checks need no torch import."""

# Keras layer name -> index of the conv layer in torchvision's vgg16().features (ReLU follows at +1).
CONV_INDEX = {
    "block1_conv1": 0, "block1_conv2": 2,
    "block2_conv1": 5, "block2_conv2": 7,
    "block3_conv1": 10, "block3_conv2": 12, "block3_conv3": 14,
    "block4_conv1": 17, "block4_conv2": 19, "block4_conv3": 21,
    "block5_conv1": 24, "block5_conv2": 26, "block5_conv3": 28,
}
CONV_CHANNELS = {name: 64 * 2 ** min(int(name[5]) - 1, 3) for name in CONV_INDEX}
POOL5_INDEX = 30
