//! The PTX ISA version a CUDA driver loads.

use core::fmt;

/// A PTX ISA version as a two-digit number: PTX 9.0 is `90`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PtxVersion(u32);

/// First driver version (as `cuDriverGetVersion` reports it, 12.8 = `12080`) that loads each
/// PTX ISA version, newest first. From NVIDIA's PTX ISA release notes.
const FIRST_DRIVER: &[(i32, u32)] = &[
    (13030, 93),
    (13020, 92),
    (13010, 91),
    (13000, 90),
    (12090, 88),
    (12080, 87),
    (12070, 86),
    (12050, 85),
    (12040, 84),
    (12030, 83),
    (12020, 82),
    (12010, 81),
    (12000, 80),
    (11080, 78),
    (11070, 77),
    (11060, 76),
    (11050, 75),
    (11040, 74),
    (11030, 73),
    (11020, 72),
    (11010, 71),
    (11000, 70),
    (10020, 65),
    (10010, 64),
    (10000, 63),
];

impl PtxVersion {
    /// The newest PTX version that a driver of version `driver` loads; `None` before CUDA 10.
    pub fn for_driver(driver: i32) -> Option<Self> {
        FIRST_DRIVER
            .iter()
            .find(|(first, _)| driver >= *first)
            .map(|&(_, ptx)| Self(ptx))
    }

    /// The version as a two-digit number (`90` for PTX 9.0).
    pub fn number(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PtxVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ptx{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::PtxVersion;

    #[test]
    fn drivers_map_to_their_newest_ptx() {
        assert_eq!(PtxVersion::for_driver(13000).map(|v| v.number()), Some(90));
        assert_eq!(PtxVersion::for_driver(12080).map(|v| v.number()), Some(87));
        assert_eq!(PtxVersion::for_driver(12060).map(|v| v.number()), Some(85));
        assert_eq!(PtxVersion::for_driver(13050).map(|v| v.number()), Some(93));
        assert_eq!(PtxVersion::for_driver(9020), None);
        assert_eq!(PtxVersion::for_driver(12080).unwrap().to_string(), "ptx87");
    }
}
