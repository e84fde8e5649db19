"""The largest inputs litefly accepts (documented in ``docs/limits.md``).

Every limit is a plain constant so that the docs, the checks and the tests agree. Anything
beyond a limit is refused with one :class:`~litefly.errors.ConfigError` line that names the
limit (``limit_error``). The limits are chosen so that every analysis litefly runs on an
accepted input (parsing, validation, parameter and MAC counts, the mixing rule, the density
check, the hash) finishes in well under a second or two on one core.
"""

from __future__ import annotations

from .errors import ConfigError

__all__ = [
    "MIB", "MAX_YAML_BYTES", "MAX_TEXT_BYTES", "MAX_JSON_BYTES", "MAX_NPZ_BYTES", "MAX_NPZ_UNCOMPRESSED_BYTES",
    "MAX_MODEL_BYTES", "MAX_DEPTH", "MAX_INT", "MAX_INT_DIGITS", "MAX_NAME_CHARS", "MAX_FEATURES",
    "MAX_CHANNELS", "MAX_FACTORS", "MAX_BLOCK", "MAX_FACTOR_PARAMS", "MAX_KERNEL", "MAX_STRIDE",
    "MAX_DILATION", "MAX_PADDING", "MAX_POOL", "MAX_IMAGE", "MAX_NETWORK_STEPS", "MAX_VECTOR_COUNT",
    "MAX_DENSE_FACTOR_CELLS", "MAX_RSHAPES_LINES", "MAX_COMPARE_LINES",
    "DENSITY_CHECK_CELLS", "MAX_MESSAGE_CHARS", "limit_error", "check_limit", "check_image_size",
]

MIB = 1 << 20

# -- files -------------------------------------------------------------------------------
MAX_YAML_BYTES = 16 * MIB          #: layer, network and conversion YAML files
MAX_TEXT_BYTES = 16 * MIB          #: rshapes text files
MAX_JSON_BYTES = 64 * MIB          #: manifests, registry entries (build.json), reports
MAX_NPZ_BYTES = 1024 * MIB         #: .npz vectors and parameters, on disk
MAX_NPZ_UNCOMPRESSED_BYTES = 2048 * MIB   #: .npz members, decompressed, all together
MAX_MODEL_BYTES = 4096 * MIB       #: PyTorch model files (litefly convert)
MAX_RSHAPES_LINES = 100_000        #: lines of one rshapes file
MAX_COMPARE_LINES = 1_000          #: non-empty lines compared by ``chain generate --rshapes``

# -- structure of YAML / JSON documents ---------------------------------------------------
MAX_DEPTH = 32                     #: nesting of lists/mappings (a config needs 4)
MAX_INT = 2 ** 62                  #: largest magnitude of an integer in a file
MAX_INT_DIGITS = 20                #: integers with more digits are refused before conversion
MAX_NAME_CHARS = 128               #: layer and network names

# -- layers and chains ------------------------------------------------------------------
MAX_FEATURES = 1 << 20             #: any chain width p, q (features, or kh*kw*channels)
MAX_CHANNELS = 1 << 16             #: conv2d in/out channels, linear in/out features are MAX_FEATURES
MAX_FACTORS = 64                   #: factors per chain (a 2^20-point butterfly has 20)
MAX_BLOCK = 1 << 16                #: block sizes r and s of a factor (t is at most MAX_FEATURES)
MAX_FACTOR_PARAMS = 1 << 28        #: nonzeros p*s of one factor
MAX_KERNEL = 32                    #: conv2d kernel height/width
MAX_STRIDE = 32                    #: conv2d stride
MAX_DILATION = 32                  #: conv2d dilation
MAX_PADDING = 1024                 #: conv2d padding
MAX_POOL = 64                      #: host pooling kernel and stride
MAX_IMAGE = 8192                   #: input image height/width (host runtime, bench)
MAX_NETWORK_STEPS = 1024           #: layers + host ops of a network
MAX_VECTOR_COUNT = 1 << 20         #: columns of one test-vector file (litefly vectors --count)
MAX_DENSE_FACTOR_CELLS = 1 << 26   #: p*q of a factor whose dense matrix is written (vectors ``factor{i}``)

#: The density check of a chain that breaks the mixing rule propagates reachability sets;
#: it is refused when it would need more than this many boolean cells at once.
DENSITY_CHECK_CELLS = 1 << 26

#: Every user-facing error line is at most this long.
MAX_MESSAGE_CHARS = 300


def limit_error(where: str, what: str, value: object, limit: int, name: str) -> ConfigError:
    """``where: what=value is above the limit name=limit (docs/limits.md)`` as a ConfigError."""
    from .safeio import short  # noqa: PLC0415 - safeio imports this module
    return ConfigError(f"{where}: {what}={short(value, 40)} is above the limit {name}={limit:,} (docs/limits.md)")


def check_limit(where: str, what: str, value: int, limit: int, name: str) -> int:
    """Return ``value`` if it is at most ``limit``, else raise :func:`limit_error`."""
    if value > limit:
        raise limit_error(where, what, value, limit, name)
    return value


def check_image_size(height: int, width: int, where: str = "input") -> tuple[int, int]:
    """Refuse an image larger than :data:`MAX_IMAGE` on either side (for the host runtime and bench)."""
    check_limit(where, "height", height, MAX_IMAGE, "MAX_IMAGE")
    check_limit(where, "width", width, MAX_IMAGE, "MAX_IMAGE")
    return height, width
