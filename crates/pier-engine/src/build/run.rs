//! `RUN`: a container from the image so far (the engine's create, start and wait), its
//! output streamed into the build's (standard error marked as such), its changes written
//! as a layer, and the container removed whatever happens. The build's network, `/dev/shm`
//! size, extra hosts and resource limits are the container's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pier_api::containers::ContainerCreate;
use pier_image::store::ImageRecord;

use super::{Build, BuildError};
use crate::context::RequestContext;
use crate::instances::Instances;

/// Removes a step's container when dropped.
struct StepContainer {
    instances: Arc<Instances>,
    ctx: RequestContext,
    id: String,
    handle: tokio::runtime::Handle,
}

impl Drop for StepContainer {
    fn drop(&mut self) {
        let r = self
            .handle
            .block_on(self.instances.remove(&self.ctx, &self.id, true, true));
        if let Err(e) = r {
            tracing::warn!(container = %self.id, error = %e.message(), "cannot remove a build step's container");
        }
    }
}

impl Build<'_> {
    /// Runs `argv` in a container from `image` with build arguments `env`; returns the
    /// path of its changes as a layer tar.
    pub(super) fn run_container(
        &mut self,
        image: &ImageRecord,
        argv: Vec<String>,
        env: Vec<String>,
        shown: &str,
    ) -> Result<PathBuf, BuildError> {
        let containers = self.b.instances.clone();
        let network = self
            .opts
            .network
            .clone()
            .filter(|n| !n.is_empty() && n != "default");
        let req = ContainerCreate {
            image: image.id.to_string(),
            cmd: Some(argv),
            // RUN ignores the image's ENTRYPOINT.
            entrypoint: Some(Vec::new()),
            env,
            network,
            shm_size: self.opts.shm_size,
            memory: self.opts.limits.memory,
            memory_swap: self.opts.limits.memory_swap,
            cpu_shares: self.opts.limits.cpu_shares,
            cpuset_cpus: self.opts.limits.cpuset_cpus.clone(),
            cpus: self.opts.limits.cpus(),
            ulimits: self.opts.limits.ulimits.clone(),
            extra_hosts: self.opts.extra_hosts.clone(),
            labels: [(super::BUILD_LABEL.to_string(), "run".to_string())].into(),
            ..Default::default()
        };
        let created = containers.create(self.ctx, req)?;
        let id = created.id.to_string();
        let guard = StepContainer {
            instances: containers.clone(),
            ctx: self.ctx.clone(),
            id: id.clone(),
            handle: self.handle.clone(),
        };
        self.say(format!(" ---> Running in {}\n", &id[..12]));
        let exit = containers.wait(self.ctx, &id, true, false)?;
        if let Err(e) = self.handle.block_on(containers.start(self.ctx, &id)) {
            let message = match e.message().split_once(" failed to start: ") {
                Some((_, why)) => why.to_string(),
                None => e.message(),
            };
            return Err(BuildError::RunNotStarted {
                command: shown.to_string(),
                message,
                code: e.exit_code(),
            });
        }
        let mut lines = containers.logs(
            self.ctx,
            &id,
            crate::sessions::LogOptions {
                follow: crate::sessions::Follow::WhileRunning,
                ..Default::default()
            },
        )?;
        loop {
            // The cancel flag is checked every 50 ms; output is passed on as it comes.
            let next = self.handle.block_on(async {
                tokio::select! {
                    l = lines.recv() => Some(l),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => None,
                }
            });
            match next {
                Some(Some(l)) if l.stream == "stderr" => {
                    (self.progress)(super::BuildEvent::Stderr(l.log))
                }
                Some(Some(l)) => self.say(l.log),
                Some(None) => break,
                None if self.cancelled() => {
                    // The guard removes the container, killing what still runs in it.
                    return Err(BuildError::Cancelled);
                }
                None => {}
            }
        }
        let code = self.handle.block_on(exit).exit_code;
        if code != 0 {
            return Err(BuildError::RunFailed {
                command: shown.to_string(),
                code,
            });
        }
        let c = containers.get(self.ctx, &id)?;
        let path = self.next_name("layer");
        let out = std::fs::File::create(&path).map_err(BuildError::io("write a layer"))?;
        containers.write_layer(&c, out)?;
        drop(guard);
        self.say(format!("Removing intermediate container {}\n", &id[..12]));
        Ok(path)
    }
}
