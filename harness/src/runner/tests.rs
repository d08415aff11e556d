//! The runner without QEMU: guests that cannot be had, reruns.
use super::*;
use events::Discard;

/// An image whose guests can never be had, counting the tries.
struct NoGuests {
    image: Image,
    boots: AtomicUsize,
}

impl Guests for NoGuests {
    fn image(&self, _group: &str) -> Result<Image, Unavailable> {
        Ok(self.image.clone())
    }
    fn guest(&self, _group: &str, name: &str) -> Result<Guest, CheckError> {
        self.boots.fetch_add(1, Ordering::SeqCst);
        Err(CheckError::harness(format!("{name}: no QEMU in this test")))
    }
}

fn no_guests() -> (tempfile::TempDir, NoGuests) {
    let dir = tempfile::tempdir().unwrap();
    for file in ["k", "i", "d"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        r#"{"schema": 2, "profile": "web", "kernel": "k", "initrd": "i", "disk": "d", "kernel_cmdline": "", "ssh_user": "u", "components": {}}"#,
    )
    .unwrap();
    let image = Image::load(dir.path()).unwrap();
    (
        dir,
        NoGuests {
            image,
            boots: AtomicUsize::new(0),
        },
    )
}

#[test]
fn a_red_trial_reruns_on_fresh_guests_and_stays_red_with_its_reruns() {
    let (_dir, guests) = no_guests();
    let trials = vec![
        Trial::new(TrialKind::Case, "web", "s", "a", Arc::new(|_| Ok(()))),
        Trial::new(TrialKind::Fault, "web", "s", "b", Arc::new(|_| Ok(()))),
    ];
    let options = RunOptions {
        retries: 2,
        ..RunOptions::default()
    };
    let report = run(&trials, &guests, &options, Arc::new(Discard));
    // Each: its first guest, then two fresh ones.
    assert_eq!(guests.boots.load(Ordering::SeqCst), 6);
    for record in &report.records {
        assert_eq!(
            record.outcome.red(),
            Some(crate::outcome::Red::HarnessError),
            "{record:?}"
        );
        assert_eq!(record.reruns.len(), 2, "{record:?}");
        assert!(!record.is_flaky());
        assert!(
            record.reruns[1].outcome.message().unwrap().contains("vm-rerun2-web-"),
            "{record:?}"
        );
    }
    assert_eq!((report.passed(), report.flaky(), report.reds()), (0, 0, 2));
}

#[test]
fn without_retries_a_red_trial_runs_once() {
    let (_dir, guests) = no_guests();
    let trials = vec![Trial::new(TrialKind::Fault, "web", "s", "b", Arc::new(|_| Ok(())))];
    let report = run(&trials, &guests, &RunOptions::default(), Arc::new(Discard));
    assert_eq!(guests.boots.load(Ordering::SeqCst), 1);
    assert!(report.records[0].reruns.is_empty());
}
