//! The instance UID: 16 bytes (a UUIDv7), made once and kept in a file
//! (mode 0600) so the server sees the same agent across restarts.
use super::OpampError;
use std::path::Path;

/// Reads the UID from `path`, or makes one and writes it there (the folder
/// is created; the file is written atomically). The file holds the UUID in
/// its hyphenated text form and a newline.
pub fn load_or_create(path: &Path) -> Result<[u8; 16], OpampError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return uuid::Uuid::parse_str(text.trim())
                .map(|u| *u.as_bytes())
                .map_err(|e| OpampError::BadFile {
                    path: path.to_path_buf(),
                    reason: format!("not a UUID ({e}); remove the file to make a new one"),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(OpampError::File {
                path: path.to_path_buf(),
                source: e,
            })
        }
    }
    let uid = *uuid::Uuid::now_v7().as_bytes();
    store(path, &uid)?;
    Ok(uid)
}

/// Writes `uid` to `path` (a server may assign a new one).
pub fn store(path: &Path, uid: &[u8; 16]) -> Result<(), OpampError> {
    let file = |source| OpampError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file)?;
    }
    let text = format!("{}\n", uuid::Uuid::from_bytes(*uid).hyphenated());
    let tmp = path.with_extension("tmp");
    crate::reload::remote::write_private(&tmp, text.as_bytes()).map_err(file)?;
    std::fs::rename(&tmp, path).map_err(file)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::reload::remote::sync_dir(dir).map_err(file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/opamp-uid");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(uuid::Uuid::from_bytes(a).get_version_num(), 7);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "garbage").unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("not a UUID"), "{err}");
    }
}
