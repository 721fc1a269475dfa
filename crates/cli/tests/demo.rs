//! `qkdnet demo` end to end: three node processes, keys over ETSI 014 for a linked and a
//! relayed pair, a file encrypted with AES-256-GCM and decrypted at the other site.
#![allow(clippy::unwrap_used)]

mod common;
use common::qkdnet;

#[test]
fn demo_delivers_linked_and_relayed_keys_and_decrypts_the_file() {
    let dir = std::env::temp_dir().join(format!("qkdnet-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = qkdnet(&["demo", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("sae-inria got key") && out.contains("identical"),
        "{out}"
    );
    assert!(out.contains("sae-oca got key"), "{out}");
    assert_eq!(out.matches("the file matches").count(), 2, "{out}");
    // Both sites of each link stored the same blocks; the sealed files are on disk.
    for f in ["message-nice-to-inria.enc", "message-inria-to-oca.enc"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let nice = std::fs::read_to_string(dir.join("logs/nice.log")).unwrap();
    assert!(
        nice.contains("bits of key stored, shared with inria"),
        "{nice}"
    );
    assert!(
        nice.contains("bits of key stored, shared with oca"),
        "{nice}"
    );
    // A second demo in the same directory is refused, naming it.
    let (code, _, err) = qkdnet(&["demo", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already holds a demo"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
