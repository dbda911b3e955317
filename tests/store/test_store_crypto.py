import stat
from pathlib import Path

import pytest

from xianyu_autoreply.store import DecryptionError, SecretBox, SecretKeyError
from xianyu_autoreply.store.crypto import KEY_FILE_NAME


def test_round_trip_and_tokens_differ_each_time() -> None:
    box = SecretBox([SecretBox.generate_key()])
    first, second = box.encrypt("unb=1; 密码"), box.encrypt("unb=1; 密码")
    assert first != second
    assert box.decrypt(first) == box.decrypt(second) == "unb=1; 密码"


def test_key_file_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    box = SecretBox.from_config(secret_key=None, data_dir=data_dir)
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = SecretBox.from_config(secret_key=None, data_dir=data_dir)
    assert again.decrypt(box.encrypt("x")) == "x"


def test_loose_key_file_permissions_are_tightened(tmp_path: Path) -> None:
    SecretBox.from_config(secret_key=None, data_dir=tmp_path)
    key_file = tmp_path / KEY_FILE_NAME
    key_file.chmod(0o644)
    SecretBox.from_config(secret_key=None, data_dir=tmp_path)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_environment_keys_win_over_the_key_file(tmp_path: Path) -> None:
    key = SecretBox.generate_key()
    box = SecretBox.from_config(secret_key=f" {key} ", data_dir=tmp_path)
    assert not (tmp_path / KEY_FILE_NAME).exists()
    assert SecretBox([key]).decrypt(box.encrypt("x")) == "x"


def test_rotation_old_key_still_decrypts_after_a_new_first_key() -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    token = SecretBox([old]).encrypt("cookie")
    rotated_box = SecretBox.from_config(secret_key=f"{new},{old}", data_dir=Path("/nonexistent"))
    assert rotated_box.decrypt(token) == "cookie"
    assert rotated_box.needs_rotation(token)
    rotated = rotated_box.rotate(token)
    assert not rotated_box.needs_rotation(rotated)
    assert SecretBox([new]).decrypt(rotated) == "cookie"


def test_wrong_key_gives_a_clear_error_naming_no_secret() -> None:
    key = SecretBox.generate_key()
    token = SecretBox([SecretBox.generate_key()]).encrypt("unb=2200123; cookie2=topsecretvalue")
    with pytest.raises(DecryptionError) as info:
        SecretBox([key]).decrypt(token)
    message = str(info.value)
    assert "XAR_SECRET_KEY" in message
    assert "topsecretvalue" not in message and key not in message and token not in message


def test_invalid_key_names_its_position_not_its_value() -> None:
    with pytest.raises(SecretKeyError) as info:
        SecretBox([SecretBox.generate_key(), "not-a-key-hunter2"])
    assert "#2" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_repr_shows_no_key() -> None:
    key = SecretBox.generate_key()
    assert key not in repr(SecretBox([key]))
