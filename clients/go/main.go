// A Go client of VoiceModelService: grpc-go, the standard google.rpc types from genproto, and
// stubs generated from proto/ by protoc-gen-go and protoc-gen-go-grpc.
//
// It creates a model, uploads a file to it (client stream), reads it back (server stream), and
// decodes the google.rpc.ErrorInfo of a failed call. It prints one JSON line of what it saw.
//
// Settings (environment): VOICEMODEL_ADDR (host:port of the gRPC listener, default
// 127.0.0.1:50051), VOICEMODEL_TOKEN (a bearer token, e.g. `npm run -s token -- alice`).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	voicemodelv1 "example.com/voice-model-service/gen/go/voicemodel/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const chunkSize = 256 * 1024

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go client:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := os.Getenv("VOICEMODEL_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	token := os.Getenv("VOICEMODEL_TOKEN")
	if token == "" {
		return fmt.Errorf("VOICEMODEL_TOKEN is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)

	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	client := voicemodelv1.NewVoiceModelServiceClient(conn)

	meta, err := structpb.NewStruct(map[string]interface{}{"client": "go"})
	if err != nil {
		return err
	}
	created, err := client.CreateVoiceModel(ctx, &voicemodelv1.CreateVoiceModelRequest{
		Provider:     "xtts-v2",
		ModelPath:    fmt.Sprintf("go/%d.pth", time.Now().UnixNano()),
		QualityScore: proto.Float64(0.91),
		Metadata:     meta,
	})
	if err != nil {
		return fmt.Errorf("CreateVoiceModel: %w", err)
	}
	model := created.GetModel()

	data := make([]byte, chunkSize*10+123)
	if _, err := rand.Read(data); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])

	upload, err := client.UploadModelFile(ctx)
	if err != nil {
		return fmt.Errorf("UploadModelFile: %w", err)
	}
	header := &voicemodelv1.UploadModelFileHeader{ModelId: model.GetId(), Sha256: proto.String(digest), SizeBytes: proto.Int64(int64(len(data)))}
	if err := upload.Send(&voicemodelv1.UploadModelFileRequest{Part: &voicemodelv1.UploadModelFileRequest_Header{Header: header}}); err != nil {
		return fmt.Errorf("UploadModelFile header: %w", err)
	}
	for start := 0; start < len(data); start += chunkSize {
		end := start + chunkSize
		if end > len(data) {
			end = len(data)
		}
		if err := upload.Send(&voicemodelv1.UploadModelFileRequest{Part: &voicemodelv1.UploadModelFileRequest_Chunk{Chunk: data[start:end]}}); err != nil {
			return fmt.Errorf("UploadModelFile chunk: %w", err)
		}
	}
	uploaded, err := upload.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("UploadModelFile: %w", err)
	}

	stream, err := client.ReadModelFile(ctx, &voicemodelv1.ReadModelFileRequest{ModelId: model.GetId()})
	if err != nil {
		return fmt.Errorf("ReadModelFile: %w", err)
	}
	var received bytes.Buffer
	messages, reported := 0, ""
	for {
		part, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("ReadModelFile: %w", err)
		}
		if messages == 0 {
			reported = part.GetSha256()
		}
		received.Write(part.GetChunk())
		messages++
	}
	readSum := sha256.Sum256(received.Bytes())

	_, err = client.GetVoiceModel(ctx, &voicemodelv1.GetVoiceModelRequest{ModelId: "00000000-0000-4000-8000-000000000000"})
	if err == nil {
		return fmt.Errorf("GetVoiceModel of an unknown id succeeded")
	}
	st := status.Convert(err)
	var info *errdetails.ErrorInfo
	for _, detail := range st.Details() {
		if found, ok := detail.(*errdetails.ErrorInfo); ok {
			info = found
		}
	}
	if info == nil {
		return fmt.Errorf("no google.rpc.ErrorInfo in %v", st.Proto())
	}

	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"client": "go",
		"model":  map[string]interface{}{"id": model.GetId(), "userId": model.GetUserId(), "metadata": model.GetMetadata().AsMap()},
		"upload": map[string]interface{}{"sizeBytes": uploaded.GetFile().GetSizeBytes(), "sha256": uploaded.GetFile().GetSha256()},
		"read": map[string]interface{}{
			"bytes":          received.Len(),
			"messages":       messages,
			"sha256":         hex.EncodeToString(readSum[:]),
			"reportedSha256": reported,
			"matches":        bytes.Equal(received.Bytes(), data),
		},
		"sentSha256": digest,
		"error": map[string]interface{}{
			"code":     st.Code().String(),
			"reason":   info.GetReason(),
			"domain":   info.GetDomain(),
			"metadata": info.GetMetadata(),
		},
	})
}
