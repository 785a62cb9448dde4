"""The Keras and PyTorch tutorials' own code runs on minicnn with only its import lines changed.

Each test below is the tutorial's code as its authors wrote it, on a slice of MNIST; the
lines marked `# changed` are the only departures (the imports, and the slice). The Keras
path is then checked against the same network built from minicnn.nn and trained by
minicnn.training.Trainer: the same weights must come out.
"""

import numpy as np
import pytest

import minicnn
from minicnn import functional as F_
from minicnn import nn as nn_
from minicnn import optim as optim_
from minicnn.training import Trainer

TRAIN, TEST = 1200, 500


@pytest.mark.slow  # trains on a slice of MNIST: seconds the default suite's 60 cannot spare
def test_the_keras_tutorial_runs_unchanged():
    from minicnn.keras import datasets, layers, models  # changed: was tensorflow.keras

    (train_images, train_labels), (test_images, test_labels) = datasets.mnist.load_data()
    train_images, train_labels = train_images[:TRAIN], train_labels[:TRAIN]  # changed: a slice
    test_images, test_labels = test_images[:TEST], test_labels[:TEST]  # changed: a slice
    train_images, test_images = train_images / 255.0, test_images / 255.0

    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation='relu'))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation='relu'))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation='relu'))
    model.add(layers.Dense(10, activation='softmax'))
    model.summary()

    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    history = model.fit(train_images, train_labels, epochs=2, validation_data=(test_images, test_labels))
    test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=2)

    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert history.history["loss"][1] < history.history["loss"][0]
    assert test_acc == history.history["val_accuracy"][-1] and test_acc > 0.8
    assert model.count_params() == 93322
    probabilities = model.predict(test_images[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.slow  # trains on a slice of MNIST: seconds the default suite's 60 cannot spare
def test_the_pytorch_tutorial_runs_unchanged():
    import minicnn as torch  # changed: was torch
    import minicnn.functional as F  # changed: was torch.nn.functional
    import minicnn.nn as nn  # changed: was torch.nn
    import minicnn.optim as optim  # changed: was torch.optim
    from minicnn.data import DataLoader, load_mnist  # changed: was torchvision's MNIST and DataLoader

    images, labels = load_mnist("train")
    trainloader = DataLoader(images[:TRAIN], labels[:TRAIN], batch_size=4, shuffle=True)  # changed: a slice
    test_images, test_labels = load_mnist("test")
    testloader = DataLoader(test_images[:TEST], test_labels[:TEST], batch_size=4)  # changed: a slice

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 4 * 4, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 16 * 4 * 4)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    losses = []
    for epoch in range(2):
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 100 == 99:
                print('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, running_loss / 100))
                losses.append(running_loss / 100)
                running_loss = 0.0

    correct = 0
    total = 0
    with torch.no_grad():
        for data in testloader:
            images, labels = data
            outputs = net(images)
            _, predicted = torch.max(outputs.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print('Accuracy of the network on the test images: %d %%' % (100 * correct / total))

    assert total == TEST
    assert losses[-1] < losses[0]
    assert correct / total > 0.5  # SGD at lr 0.001 for 600 small steps: past chance (0.1), not yet good


def _keras_cnn():
    from minicnn.keras import layers, models

    return models.Sequential([
        layers.Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(16, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def _nn_cnn():
    return nn_.Sequential(
        nn_.Conv2D(1, 8, 3, init="glorot"), nn_.ReLU(), nn_.MaxPool2D(2),
        nn_.Conv2D(8, 16, 3, init="glorot"), nn_.ReLU(), nn_.MaxPool2D(2),
        nn_.Flatten(),
        nn_.Dense(16 * 5 * 5, 32, init="glorot"), nn_.ReLU(),
        nn_.Dense(32, 10, init="glorot"),
    )


def test_the_keras_path_trains_exactly_like_the_same_network_built_from_nn():
    from minicnn.data import load_mnist

    images, labels = load_mnist("train")
    images, labels = images[:600] / 255.0, labels[:600]
    minicnn.manual_seed(0)
    keras_model = _keras_cnn()
    keras_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    plain = _nn_cnn()
    plain.load_state_dict(keras_model.network.state_dict())  # the same starting weights

    keras_model.fit(images, labels, epochs=2, batch_size=32, verbose=0)
    trainer = Trainer(plain, optim_.Adam(plain.parameters(), lr=1e-3, eps=1e-7), loss=F_.cross_entropy)
    trainer.fit(images[:, None].astype(np.float32), labels, epochs=2, batch_size=32, seed=0, verbose=0)

    trained = keras_model.network.state_dict()
    for name, array in plain.state_dict().items():
        np.testing.assert_allclose(trained[name], array, rtol=1e-6, atol=1e-7, err_msg=name)
    logits = plain(minicnn.tensor(images[:50, None].astype(np.float32)))
    np.testing.assert_allclose(keras_model.predict(images[:50]), F_.softmax(logits, axis=1).numpy(), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("channels_last", [True, False])
def test_keras_takes_images_with_or_without_their_channel_axis(channels_last):
    rng = np.random.default_rng(0)
    images = rng.random((6, 28, 28, 1) if channels_last else (6, 28, 28))
    model = _keras_cnn()
    assert model.predict(images).shape == (6, 10)
