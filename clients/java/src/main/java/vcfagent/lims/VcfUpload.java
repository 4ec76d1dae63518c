package vcfagent.lims;

import com.google.protobuf.ByteString;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import vcf_agent.v1.IngestServiceGrpc;
import vcf_agent.v1.Jobs.Job;
import vcf_agent.v1.Jobs.SubmitVcfMetadata;
import vcf_agent.v1.Jobs.SubmitVcfRequest;
import vcf_agent.v1.Jobs.SubmitVcfResponse;

/**
 * One SubmitVcf call: the metadata message, then the file in 1 MiB chunks.
 *
 * <p>Chunks are read only when the transport is ready for more, so a multi-gigabyte VCF never sits
 * in the client's memory waiting for a slow network or server.
 */
final class VcfUpload implements ClientResponseObserver<SubmitVcfRequest, SubmitVcfResponse> {

  static final int CHUNK_BYTES = 1 << 20;

  private final SubmitVcfMetadata metadata;
  private final InputStream input;
  private final CompletableFuture<Job> result = new CompletableFuture<>();
  private ClientCallStreamObserver<SubmitVcfRequest> requests;
  // gRPC runs the on-ready handler serially, but onError may arrive on another thread.
  private volatile boolean finished;
  private boolean metadataSent;

  private VcfUpload(SubmitVcfMetadata metadata, InputStream input) {
    this.metadata = metadata;
    this.input = input;
  }

  /** Uploads the file and returns the job the ingest service created (or found) for it. */
  static Job submit(IngestServiceGrpc.IngestServiceStub stub, SubmitVcfMetadata metadata, Path file)
      throws IOException, InterruptedException {
    try (InputStream input = Files.newInputStream(file)) {
      VcfUpload upload = new VcfUpload(metadata, input);
      stub.submitVcf(upload);
      try {
        return upload.result.get();
      } catch (ExecutionException e) {
        Throwable cause = e.getCause();
        if (cause instanceof IOException io) {
          throw io;
        }
        if (cause instanceof RuntimeException runtime) {
          throw runtime;
        }
        throw new IllegalStateException("SubmitVcf failed", cause);
      }
    }
  }

  @Override
  public void beforeStart(ClientCallStreamObserver<SubmitVcfRequest> requestStream) {
    requests = requestStream;
    requestStream.setOnReadyHandler(this::sendWhileReady);
  }

  private void sendWhileReady() {
    try {
      while (!finished && requests.isReady()) {
        if (!metadataSent) {
          requests.onNext(SubmitVcfRequest.newBuilder().setMetadata(metadata).build());
          metadataSent = true;
          continue;
        }
        byte[] chunk = input.readNBytes(CHUNK_BYTES);
        if (chunk.length == 0) {
          finished = true;
          requests.onCompleted();
          return;
        }
        requests.onNext(SubmitVcfRequest.newBuilder().setChunk(ByteString.copyFrom(chunk)).build());
      }
    } catch (IOException e) {
      finished = true;
      requests.cancel("reading the VCF failed", e);
      result.completeExceptionally(e);
    }
  }

  @Override
  public void onNext(SubmitVcfResponse response) {
    result.complete(response.getJob());
  }

  @Override
  public void onError(Throwable error) {
    finished = true;
    result.completeExceptionally(error);
  }

  @Override
  public void onCompleted() {
    result.completeExceptionally(new IllegalStateException("SubmitVcf ended without a response"));
  }
}
